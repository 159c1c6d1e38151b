"""A Generation at the API's largest population, with every field at its bound, fits in one etcd object.

The object is built by the operator's own builders (spec, genomes, status) from a worst-case Population
spec: the longest names, URIs, prompt template, target modules and seed adapters the CRD admits, every
genome with two parents, every gene, a clipped failure message and the most metrics. The real apiserver
(and etcd, with its default request limit) must take it, spec and status.
"""

from __future__ import annotations

import json

import pytest

from nora.api.generation import MAX_GENOMES, GenomeOrigin
from nora.api.manifest import MAX_NAME_LENGTH, parse_population
from nora.api.status import METRICS_LIMIT
from nora.evolution.layout import genome_id, job_name, start_adapter_key, trained_adapter_key
from nora.evolution.ledger import GenerationRecord
from nora.evolution.records import GenomePlan, GenomeResult
from nora.operator.generations import GenerationObject, Location, spec_json
from nora.operator.objects import ObjectRef, build_generation
from tests.integration.test_operator_support import GROUP_PATH
from tests.support.crds import install_crds
from tests.support.fixtures import Kubectl
from tests.support.kubeapi import KubeHTTP
from tests.support.manifests import population_body

pytestmark = pytest.mark.integration
ETCD_LIMIT = 1536 * 1024  # etcd's default --max-request-bytes
URI = 2048
GENES = {
    **{name: [1e-06, 0.9] for name in ("learningRate", "learning_rate")},
    **{name: [0.0, 3.5] for name in ("nllWeight", "nll_weight")},
    "beta": [0.01, 9.5],
    "temperature": [0.1, 5.0],
}


def _uri(scheme: str, tag: str) -> str:
    return scheme + tag + "/" + "u" * (URI - len(scheme) - len(tag) - 1)


def _worst_spec(name: str) -> dict[str, object]:
    storage = {"bucket": "b" * 63, "prefix": "/".join(["p" * 63] * 4), "secretRef": {"name": "s" * 253}}
    return population_body(
        name,
        populationSize=MAX_GENOMES,
        baseModel={"uri": _uri("hf://", "model")},
        dataset={
            "train": _uri("s3://", "train"),
            "eval": _uri("s3://", "eval"),
            "promptTemplate": "{question}" + "t" * (16384 - 10),
            "answerPattern": "(" + "a" * 1022 + ")",
        },
        adapter={"initialRank": 2, "alpha": 4, "targetModules": [f"{i:03d}" + "m" * 250 for i in range(256)]},
        seedAdapters=[{"uri": _uri("s3://", f"seed{i}")} for i in range(64)],
        mutation={"hyperparameters": GENES, "maxRank": 8},
        storage=storage,
    )


def _worst_record(name: str, prefix: str, number: int) -> GenerationRecord:
    genes = dict.fromkeys(GENES, 0.12345678901234568)
    plans, results = [], []
    for index in range(MAX_GENOMES):
        genome = genome_id(name, number, index)
        parents = [genome_id(name, number - 1, MAX_GENOMES - 1 - k) for k in range(2)]
        adapter = start_adapter_key(prefix, name, number, genome)
        origin: GenomeOrigin = "seed" if index < 64 else "crossover"
        adapter = _uri("s3://", f"seed{index}") if origin == "seed" else adapter
        plans.append(
            GenomePlan(
                id=genome,
                index=index,
                generation=number,
                origin=origin,
                parents=[] if origin == "seed" else parents,
                adapter=adapter,
                hyperparameters=genes,
                seed=2**63 - 1,
            )
        )
        results.append(
            GenomeResult(
                id=genome,
                phase="Failed",
                attempts=21,
                fitness=0.123456789012345678,
                metrics={f"metric_{k:02d}_" + "x" * 22: 1.23456789012345e-05 for k in range(METRICS_LIMIT)},
                adapter=trained_adapter_key(prefix, name, number, genome),
                message="BackoffLimitExceeded: " + "e" * 1000,
                retrains=8,
            )
        )
    return GenerationRecord(number=number, plans=plans, results=results)


def test_a_generation_at_the_largest_population_fits_in_etcd(
    kube_api: KubeHTTP, kubectl: Kubectl, namespace: str
) -> None:
    install_crds(kubectl)
    name, number = "w" * MAX_NAME_LENGTH, 9999
    spec = parse_population(_worst_spec(name)).spec
    location = Location(spec.storage.bucket or "")
    prefix = f"{spec.storage.prefix}/{'n' * 63}"  # <prefix>/<namespace>
    record = _worst_record(name, prefix, number)
    ref = ObjectRef("nora.dev/v1alpha1", "Population", namespace, name, "0" * 36)
    body = build_generation(ref, number, spec_json(name, record.plans, spec.to_json_dict(), location))
    body["metadata"].pop("ownerReferences")  # no owner: the garbage collector must leave it alone

    path = f"{GROUP_PATH}/namespaces/{namespace}/generations"
    created = kube_api.post(path, body)
    generation = GenerationObject.from_body(created, location)
    generation = generation.with_results(record.results)
    generation = GenerationObject(
        ref=generation.ref,
        record=generation.record,
        planned_with=generation.planned_with,
        phase="Failed",
        jobs={r.id: job_name(r.id, 8) for r in record.results},
        breeding_seconds=123456.789,
        start_time="2026-01-01T00:00:00Z",
        completion_time="2026-01-01T00:00:00Z",
    )
    status = generation.status_json(location, spec.fitness.goal)
    kube_api.patch(f"{path}/{created['metadata']['name']}/status", {"status": status})

    stored = kube_api.get(f"{path}/{created['metadata']['name']}")
    size = len(json.dumps(stored, separators=(",", ":")))
    print(f"\nlargest Generation at populationSize {MAX_GENOMES}: {size} bytes ({size / 1024:.0f} KiB)")
    assert len(stored["spec"]["genomes"]) == len(stored["status"]["genomes"]) == MAX_GENOMES
    assert all(len(g.get("message", "")) <= 512 for g in stored["status"]["genomes"])
    assert "template" not in stored["spec"]["plannedWith"]
    assert size < ETCD_LIMIT * 0.8  # a fifth to spare for managedFields and future fields
