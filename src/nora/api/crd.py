"""Generate the CustomResourceDefinitions from the API models (the single source of truth).

``python -m nora.api.crd`` writes ``nora.dev_populations.yaml``, ``nora.dev_generations.yaml`` and kopf's
peering CRDs (``kopf.dev_peerings.yaml``) into both ``crds/`` and the Helm chart's ``helm/nora/crds/``;
``python -m nora.api.crd --check`` exits 1 when either folder differs from what is generated (CI runs it).

Each model's schema comes from :func:`nora.api.openapi.model_schema` (pydantic's JSON Schema made a
structural OpenAPI v3 schema, defaults kept for the Population spec so the apiserver fills them in). What
JSON Schema cannot carry comes from the tables below: URI patterns, list-map keys, and the CEL rules
(``x-kubernetes-validations``) that mirror the cross-field rules of
:func:`nora.api.population.semantic_problems`, with the same messages.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic.alias_generators import to_camel

from nora.api.base import API_GROUP, API_VERSION
from nora.api.generation import GenerationSpec, GenerationStatus
from nora.api.manifest import MAX_NAME_LENGTH
from nora.api.openapi import Schema, model_schema
from nora.api.population import (
    DATA_URI_SCHEMES,
    EQUAL_RANK_CROSSOVERS,
    GENE_NAMES,
    MODEL_URI_SCHEMES,
    PopulationSpec,
    TrainingSpec,
)
from nora.api.status import PopulationStatus
from nora.api.strategy import STRATEGY_RULES

HEADER = "# Generated from the nora.api models by `python -m nora.api.crd`; do not edit by hand.\n"
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DIRS = (REPO_ROOT / "crds", REPO_ROOT / "helm" / "nora" / "crds")


def _scheme_pattern(schemes: tuple[str, ...]) -> str:
    return "^(" + "|".join(scheme.removesuffix("://") for scheme in schemes) + ")://"


def _rule(rule: str, message: str, field_path: str | None = None) -> Schema:
    entry: Schema = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


SIZE_RULES = (
    ("!has(self.selection.survivors) || self.selection.survivors <= self.populationSize",
     "must not exceed spec.populationSize", ".selection.survivors"),
    ("self.selection.elites < self.populationSize",
     "leaves no room for offspring; use fewer than spec.populationSize", ".selection.elites"),
    ("self.selection.tournamentSize <= self.populationSize",
     "must not exceed spec.populationSize", ".selection.tournamentSize"),
    ("!has(self.retries.maxFailedGenomes) || self.retries.maxFailedGenomes <= self.populationSize",
     "must not exceed spec.populationSize", ".retries.maxFailedGenomes"),
)  # fmt: skip
"""(rule, message, field) on ``spec``: the size rules of :func:`nora.api.population.semantic_problems`.

Messages are static: the apiserver's cost estimate refuses ``messageExpression`` with ``string(int)``."""

_EQUAL_RANK = "[" + ", ".join(f"'{m}'" for m in EQUAL_RANK_CROSSOVERS) + "]"
BREEDING_RULES = (
    ("self.adapter.initialRank <= self.mutation.maxRank",
     "must not exceed spec.mutation.maxRank", ".adapter.initialRank"),
    ("self.training.pairsPerPrompt <= self.training.samplesPerPrompt",
     "must not exceed spec.training.samplesPerPrompt", ".training.pairsPerPrompt"),
    ("!has(self.crossover.rank) || self.crossover.method == 'svd'",
     "only the svd crossover method truncates to a rank", ".crossover.rank"),
    (f"!(self.crossover.method in {_EQUAL_RANK}) || "
     "(self.mutation.rankGrowProbability == 0.0 && self.mutation.rankShrinkProbability == 0.0)",
     "this method needs equal ranks, but spec.mutation changes ranks; set rankGrowProbability and "
     "rankShrinkProbability to 0, or use nora, linear or svd", ".crossover.method"),
)  # fmt: skip
FITNESS_AND_STORAGE_RULES = (
    ("self.fitness.metric != 'irpo_loss' || self.fitness.goal == 'minimize'",
     "irpo_loss is a loss; set goal: minimize", ".fitness.goal"),
    ("self.fitness.metric != 'accuracy' || self.fitness.goal == 'maximize'",
     "accuracy is maximized; set goal: maximize", ".fitness.goal"),
    ("!has(self.storage.secretRef) || has(self.storage.bucket)",
     "credentials are given but spec.storage.bucket is not set", ".storage.secretRef"),
)  # fmt: skip

CLUSTER_RULES = (
    ("!has(self.workloadPriorityClassName) || has(self.queueName)",
     "Kueue ranks only the Jobs it queues; set spec.queueName too", ".workloadPriorityClassName"),
    ("!has(self.modelCache) || has(self.modelCache.storageClassName) != has(self.modelCache.claimName)",
     "set exactly one of storageClassName (the operator creates the PVC) or claimName (an existing PVC)",
     ".modelCache"),
    ("!has(self.modelCache) || self.baseModel.uri.startsWith('s3://') || self.baseModel.uri.startsWith('hf://')",
     "spec.modelCache fetches only s3:// or hf:// models; mount a volume with spec.template.volumes and "
     "use file:// instead", ".baseModel.uri"),
)  # fmt: skip
"""Kueue priority and the model cache (volume names are checked by the operator: CEL cannot read them)."""


def population_spec_rules() -> list[Schema]:
    """CEL rules on ``spec`` mirroring :func:`nora.api.population.semantic_problems`."""
    tables = (SIZE_RULES, BREEDING_RULES, FITNESS_AND_STORAGE_RULES, CLUSTER_RULES, STRATEGY_RULES)
    return [_rule(*rule) for table in tables for rule in table]


HYPERPARAMETER_RULE = _rule(
    "!has(self.hyperparameters) || self.hyperparameters.all(k, "
    "self.hyperparameters[k][0] <= self.hyperparameters[k][1])",
    "every [low, high] range needs low <= high",
    ".hyperparameters",
)


def _gene_bound_rules(name: str) -> list[Schema]:
    """CEL rules keeping gene ``name``'s [low, high] inside its training field's own range."""
    field = TrainingSpec.model_fields[GENE_NAMES[name]]
    tests = []
    for bound in field.metadata:
        for attribute, index, operator in (("gt", 0, ">"), ("ge", 0, ">="), ("lt", 1, "<"), ("le", 1, "<=")):
            if getattr(bound, attribute, None) is not None:
                limit = float(getattr(bound, attribute))
                tests.append(f"self.hyperparameters['{name}'][{index}] {operator} {limit}")
    if not tests:
        return []
    rule = f"!has(self.hyperparameters) || !('{name}' in self.hyperparameters) || ({' && '.join(tests)})"
    training = to_camel(GENE_NAMES[name])
    return [_rule(rule, f"{name}: outside spec.training.{training}'s range", f".hyperparameters.{name}")]


def gene_rules() -> list[Schema]:
    """CEL rules on ``spec.mutation`` mirroring the gene checks of :func:`semantic_problems`."""
    names = "[" + ", ".join(f"'{name}'" for name in GENE_NAMES) + "]"
    known = _rule(
        f"!has(self.hyperparameters) || self.hyperparameters.all(k, k in {names})",
        "not a gene the trainer knows; use learningRate, beta, nllWeight or temperature",
        ".hyperparameters",
    )
    bounds = [rule for name in GENE_NAMES for rule in _gene_bound_rules(name)]
    return [known, *bounds]


URI_LIMIT = 2048
"""Characters allowed in a URI of the spec (each is copied into Generations; see ``MAX_GENOMES``)."""

POPULATION_EXTRAS: Mapping[str, Schema] = {
    "spec": {"x-kubernetes-validations": population_spec_rules()},
    "spec.baseModel.uri": {"pattern": _scheme_pattern(MODEL_URI_SCHEMES), "maxLength": URI_LIMIT},
    "spec.dataset.train": {"pattern": _scheme_pattern(DATA_URI_SCHEMES), "maxLength": URI_LIMIT},
    "spec.dataset.eval": {"pattern": _scheme_pattern(DATA_URI_SCHEMES), "maxLength": URI_LIMIT},
    "spec.dataset.test": {"pattern": _scheme_pattern(DATA_URI_SCHEMES), "maxLength": URI_LIMIT},
    "spec.dataset.answerPattern": {"maxLength": 1024},
    "spec.dataset.promptTemplate": {
        "x-kubernetes-validations": [
            _rule("self.contains('{question}')", "must contain the placeholder {question}")
        ]
    },
    "spec.seedAdapters[]": {"required": ["uri"]},
    "spec.seedAdapters[].uri": {"pattern": _scheme_pattern(DATA_URI_SCHEMES), "maxLength": URI_LIMIT},
    "spec.mutation": {"x-kubernetes-validations": [HYPERPARAMETER_RULE, *gene_rules()]},
    "spec.mutation.hyperparameters": {"maxProperties": len(GENE_NAMES)},
    "spec.adapter.targetModules": {"maxItems": 256},
    "spec.adapter.targetModules[]": {"maxLength": 253},
    "spec.seedAdapters": {"maxItems": 64},
    "status.conditions": {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
}
GENERATION_EXTRAS: Mapping[str, Schema] = {}

KOPF_STATUS: Schema = {
    "type": "object",
    "description": "Written by the kopf framework (handler progress); kept as is.",
    "x-kubernetes-preserve-unknown-fields": True,
}


def _apply_extras(schema: Schema, extras: Mapping[str, Schema]) -> Schema:
    for path, extra in extras.items():
        node = schema
        for part in path.split("."):
            name, is_item = part.removesuffix("[]"), part.endswith("[]")
            node = node["properties"][name]
            if is_item:
                node = node["items"]
        for key, value in extra.items():
            node[key] = sorted({*node.get(key, []), *value}) if key == "required" else value
    return schema


def _printer_columns(*columns: tuple[str, str, str, int]) -> list[Schema]:
    result = [
        {"name": name, "type": kind, "jsonPath": path, **({"priority": priority} if priority else {})}
        for name, kind, path, priority in columns
    ]
    return [*result, {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]


def _root_schema(spec: Schema, status: Schema, description: str) -> Schema:
    status["properties"]["kopf"] = KOPF_STATUS
    return {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def _crd(kind: str, plural: str, short: str, schema: Schema, columns: list[Schema]) -> Schema:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["nora"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def population_crd() -> Schema:
    """The ``populations.nora.dev`` CRD."""
    schema = _root_schema(
        model_schema(PopulationSpec, with_defaults=True),
        model_schema(PopulationStatus, with_defaults=False),
        "A population of LoRA adapters evolved by the NoRA operator, one Generation per round.",
    )
    schema = _apply_extras(schema, POPULATION_EXTRAS)
    schema["x-kubernetes-validations"] = [
        _rule(
            f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
            f"metadata.name: at most {MAX_NAME_LENGTH} characters (Job names are <population>-g<N>-<i>)",
        ),
        _rule(
            "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
            "metadata.name: only lowercase letters, digits and '-' (it names Jobs and labels)",
        ),
    ]
    columns = _printer_columns(
        ("Phase", "string", ".status.phase", 0),
        ("Generation", "integer", ".status.generation", 0),
        ("Best", "number", ".status.best.fitness", 0),
        ("Reason", "string", ".status.reason", 1),
        ("Test", "number", ".status.test.best.accuracy", 1),
    )
    return _crd("Population", "populations", "pop", schema, columns)


def generation_crd() -> Schema:
    """The ``generations.nora.dev`` CRD."""
    schema = _root_schema(
        model_schema(GenerationSpec, with_defaults=False),
        model_schema(GenerationStatus, with_defaults=False),
        "One round of a Population's evolution: its genomes' lineage (spec) and results (status).",
    )
    schema = _apply_extras(schema, GENERATION_EXTRAS)
    columns = _printer_columns(
        ("Population", "string", ".spec.population", 0),
        ("Generation", "integer", ".spec.generation", 0),
        ("Phase", "string", ".status.phase", 0),
        ("Best", "number", ".status.best", 0),
        ("Mean", "number", ".status.mean", 1),
    )
    return _crd("Generation", "generations", "gen", schema, columns)


KOPF_PEERING_NOTE = """\
# kopf's peering resources (defined in nora.api.crd, not by the models): needed only when the operator runs
# more than one replica (NORA_PEERING=<name>); create a ClusterKopfPeering (cluster-wide operator) or a
# KopfPeering in each served namespace with that name. Replicas need distinct NORA_PRIORITY values.
"""


def _peering_crd(kind: str, plural: str, scope: str) -> Schema:
    status: Schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kopf.dev"},
        "spec": {
            "scope": scope,
            "group": "kopf.dev",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"status": status}}},
                }
            ],
        },
    }


def kopf_peering_crds() -> list[Schema]:
    """kopf's ``clusterkopfpeerings.kopf.dev`` and ``kopfpeerings.kopf.dev`` CRDs (peering of replicas)."""
    return [
        _peering_crd("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
        _peering_crd("KopfPeering", "kopfpeerings", "Namespaced"),
    ]


def _dump(document: Schema) -> str:
    return yaml.safe_dump(document, sort_keys=False, width=100)


def rendered() -> dict[str, str]:
    """File name to YAML text of every generated CRD file."""
    documents = {
        f"{API_GROUP}_populations.yaml": population_crd(),
        f"{API_GROUP}_generations.yaml": generation_crd(),
    }
    files = {name: HEADER + _dump(document) for name, document in documents.items()}
    peering = "---\n".join(_dump(document) for document in kopf_peering_crds())
    files["kopf.dev_peerings.yaml"] = HEADER + KOPF_PEERING_NOTE + peering
    return files


def drifted(directory: Path) -> list[str]:
    """Names of the generated files that are missing from ``directory`` or differ from the models."""
    return [
        name
        for name, text in rendered().items()
        if not (directory / name).exists() or (directory / name).read_text() != text
    ]


def main(argv: list[str] | None = None) -> int:
    """Write the CRDs (default) or, with ``--check``, report whether they are current."""
    parser = argparse.ArgumentParser(prog="python -m nora.api.crd", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the files are not current")
    parser.add_argument(
        "--dir",
        type=Path,
        action="append",
        help="output folder, repeatable (default: " + " and ".join(str(d) for d in DEFAULT_DIRS) + ")",
    )
    args = parser.parse_args(argv)
    directories: list[Path] = args.dir or list(DEFAULT_DIRS)
    if args.check:
        stale = [directory / name for directory in directories for name in drifted(directory)]
        for path in stale:
            print(f"{path}: out of date; run `python -m nora.api.crd`", file=sys.stderr)
        return 1 if stale else 0
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in rendered().items():
            (directory / name).write_text(text)
            print(directory / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
