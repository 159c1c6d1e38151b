"""A human- and machine-readable summary of an adapter folder (what ``nora inspect`` prints)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nora.genetics.factors import update_frobenius_norm
from nora.genetics.io import load_genome, manifest_status


@dataclass(frozen=True)
class ModuleSummary:
    """One module: its rank, alpha, base shape and factor norms (``update_norm`` = ``||scale B A||_F``)."""

    name: str
    rank: int
    alpha: float
    out_features: int
    in_features: int
    a_norm: float
    b_norm: float
    update_norm: float


@dataclass(frozen=True)
class AdapterSummary:
    """The whole adapter: modules, totals, dtype, checksum status and hyperparameter genes."""

    path: str
    checksum: str
    dtype: str
    parameters: int
    bytes: int
    use_rslora: bool
    hyperparameters: dict[str, float]
    modules: list[ModuleSummary]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_adapter(directory: str | os.PathLike[str]) -> AdapterSummary:
    """Load (and so verify) the adapter at ``directory`` and summarize it."""
    folder = Path(directory)
    genome = load_genome(folder)
    modules = [
        ModuleSummary(
            name=name,
            rank=m.rank,
            alpha=m.alpha,
            out_features=m.out_features,
            in_features=m.in_features,
            a_norm=float(m.a.float().norm()),
            b_norm=float(m.b.float().norm()),
            update_norm=m.scale(genome.use_rslora) * update_frobenius_norm(m.a, m.b),
        )
        for name, m in genome.items()
    ]
    return AdapterSummary(
        path=str(folder),
        checksum=manifest_status(folder),
        dtype=str(genome.dtype).removeprefix("torch."),
        parameters=genome.parameter_count,
        bytes=genome.nbytes,
        use_rslora=genome.use_rslora,
        hyperparameters=dict(genome.hyperparameters),
        modules=modules,
    )
