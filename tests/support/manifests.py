"""The one builder of Population manifests for tests: a small engine spec with overrides.

The default is 4 genomes of rank 2 over 3 generations (1 elite, 2 survivors, tournament of 2) on
``q_proj``/``v_proj``, with base model and data URIs that name nothing (stand-in trainers never read
them). Tests override only what they are about.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from nora.api.base import API_GROUP_VERSION
from nora.api.manifest import PopulationManifest, parse_population

BASE_SPEC: dict[str, Any] = {
    "baseModel": {"uri": "file:///nonexistent/model"},
    "dataset": {"train": "file:///nonexistent/train.jsonl", "eval": "file:///nonexistent/eval.jsonl"},
    "populationSize": 4,
    "maxGenerations": 3,
    "seed": 7,
    "parallelism": 2,
    "selection": {"method": "tournament", "survivors": 2, "elites": 1, "tournamentSize": 2},
    "adapter": {"initialRank": 2, "alpha": 4, "targetModules": ["q_proj", "v_proj"]},
    "mutation": {"sigma": 0.01, "rankGrowProbability": 0.3, "rankShrinkProbability": 0.1, "maxRank": 8},
}


def population_spec(**overrides: Any) -> dict[str, Any]:
    """The default spec with top-level fields replaced by ``overrides`` (camelCase, as in YAML)."""
    return {**copy.deepcopy(BASE_SPEC), **overrides}


def population_body(name: str, namespace: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A whole Population object (``metadata.namespace`` only when given)."""
    metadata: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {
        "apiVersion": API_GROUP_VERSION,
        "kind": "Population",
        "metadata": metadata,
        "spec": population_spec(**overrides),
    }


def population_yaml(name: str, namespace: str | None = None, **overrides: Any) -> str:
    return yaml.safe_dump(population_body(name, namespace, **overrides), sort_keys=False)


def population_manifest(name: str, **overrides: Any) -> PopulationManifest:
    """The parsed (validated) manifest, as ``nora run`` takes it."""
    return parse_population(population_body(name, **overrides))
