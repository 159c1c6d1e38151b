"""The point record of a ``cmaes`` genome: ``start/point.json`` next to where an adapter would be.

The engine writes it (it has no model, so it cannot know the modules' shapes); the trainer, which loads
the base model, projects it into the starting adapter with :func:`nora.genetics.projection.project_genome`.
With layer alternation the record holds one point per model layer and each module takes its layer's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nora.genetics.errors import GeneticsError
from nora.genetics.projection import ProjectionSpec

POINT_FILE = "point.json"
"""The record's file name inside a genome's ``start/`` folder."""

_LAYER = re.compile(r"\.(\d+)\.")


@dataclass(frozen=True)
class PointRecord:
    """Where a ``cmaes`` genome sits in the search space, and how to turn that into an adapter.

    Attributes:
        projection: the projection settings (seed, dimension, rank, alpha, sigma, scale).
        points: one point (``projection.dimension`` numbers) for all modules, or one per model layer.
        layered: whether ``points[i]`` belongs to layer ``i`` (layer alternation).
    """

    projection: ProjectionSpec
    points: tuple[tuple[float, ...], ...]
    layered: bool = False

    def to_json(self) -> dict[str, Any]:
        p = self.projection
        return {
            "projection": {
                "seed": p.seed,
                "dimension": p.dimension,
                "rank": p.rank,
                "alpha": p.alpha,
                "sigma": p.sigma,
                "scale": p.scale,
            },
            "points": [list(point) for point in self.points],
            "layered": self.layered,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PointRecord:
        return cls(
            projection=ProjectionSpec(**data["projection"]),
            points=tuple(tuple(float(x) for x in point) for point in data["points"]),
            layered=bool(data.get("layered", False)),
        )

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True).encode()

    @classmethod
    def loads(cls, data: bytes) -> PointRecord:
        try:
            return cls.from_json(json.loads(data))
        except (ValueError, KeyError, TypeError) as error:
            raise GeneticsError(f"{POINT_FILE}: not a point record ({error})") from None


def layer_of(module: str) -> int:
    """The layer index in a module name (``model.layers.3.self_attn.q_proj`` is in layer 3)."""
    found = _LAYER.search(module)
    if found is None:
        raise GeneticsError(f"module {module} has no layer index; layer alternation needs layered modules")
    return int(found.group(1))


def module_points(record: PointRecord, modules: Iterable[str]) -> dict[str, tuple[float, ...]]:
    """Each module's point: the one shared point, or its layer's (raising if the layer has none)."""
    if not record.layered:
        return dict.fromkeys(modules, record.points[0])
    chosen = {}
    for module in modules:
        layer = layer_of(module)
        if layer >= len(record.points):
            raise GeneticsError(
                f"spec.strategy.layers: {len(record.points)} layers, but module {module} is in layer "
                f"{layer}; set layers to the base model's number of layers"
            )
        chosen[module] = record.points[layer]
    return chosen
