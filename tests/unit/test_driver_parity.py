"""One manifest, two drivers: ``nora run`` (a folder) and the reconciler (a fake cluster) keep the same books.

Both run the stand-in trainer, so every difference would come from the drivers' bookkeeping: the plans
(lineage, genes, seeds), the results, the history, the best genome, the ledger files and ``best.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nora.evolution.ledger import GenerationRecord
from nora.local.display import LineDisplay
from nora.local.driver import LocalDriver, RunConfig
from nora.local.executor import Launch, Outcome
from nora.operator.objects import generation_name
from nora.operator.reconciler import PopulationRef
from nora.storage import LocalStore
from tests.support import standin
from tests.support.fake_cluster import FakeCluster, population_status, run_to_end
from tests.support.manifests import population_body, population_manifest

NAME, NS = "twin", "team"
SPEC: dict[str, Any] = {
    "storage": {"bucket": "bkt"},
    "populationSize": 5,
    "maxGenerations": 3,
    "parallelism": 2,
}


class _Done:
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome

    def poll(self) -> Outcome | None:
        return self.outcome

    def kill(self) -> None:
        return None


class StandinExecutor:
    def start(self, launch: Launch) -> _Done:
        return _Done(Outcome(exit_code=0, summary=standin.train(launch.task_uri), reason=""))


CLUSTER_BASE, LOCAL_BASE = f"nora/{NS}/{NAME}", f"nora/{NAME}"
"""The operator keeps a Population under its namespace (``<prefix>/<namespace>/<population>``)."""


def _local_keys(text: str) -> Any:
    return json.loads(text.replace(CLUSTER_BASE, LOCAL_BASE))


def _comparable(generation: GenerationRecord) -> dict[str, Any]:
    results = [r.model_copy(update={"job": None}).to_json_dict() for r in generation.results]
    plans = [p.to_json_dict() for p in generation.plans]
    return dict(_local_keys(json.dumps({"plans": plans, "results": results})))


def _best_json(store: LocalStore, base: str) -> dict[str, Any]:
    record = json.loads(store.read_bytes(f"{base}/best/best.json"))
    assert record.pop("exported") == store.uri(f"{base}/best")
    return dict(_local_keys(json.dumps(record)))


def test_the_local_driver_and_the_reconciler_keep_the_same_books(tmp_path: Path) -> None:
    config = RunConfig(manifest=population_manifest(NAME, **SPEC), run_dir=tmp_path / "local", workers=2)
    state = LocalDriver(config, StandinExecutor(), LineDisplay()).run()
    local = LocalStore(tmp_path / "local" / "store")

    cluster, remote = FakeCluster(), LocalStore(tmp_path / "cluster")
    cluster.add("Population", population_body(NAME, NS, **SPEC))
    run_to_end(cluster, remote, PopulationRef(NS, NAME))
    status = population_status(cluster, PopulationRef(NS, NAME))

    assert (state.phase, state.reason) == (status["phase"], status["reason"])
    assert [row.to_json_dict() for row in state.history] == status["history"]
    assert state.best is not None
    best = {**state.best.to_json_dict(), "adapter": f"s3://bkt/{state.best.adapter}"}
    assert best == _local_keys(json.dumps(status["best"]))
    for generation in state.generations:
        body = cluster.get_generation(NS, generation_name(NAME, generation.number))
        assert body is not None
        stored = GenerationRecord.model_validate(
            json.loads(remote.read_bytes(f"{CLUSTER_BASE}/g{generation.number}/generation.json"))
        )
        assert _comparable(stored) == _comparable(generation)
        assert [g["id"] for g in body["spec"]["genomes"]] == [p.id for p in generation.plans]
    assert json.loads(local.read_bytes(f"{LOCAL_BASE}/population.json")) == _local_keys(
        remote.read_bytes(f"{CLUSTER_BASE}/population.json").decode()
    )
    assert _best_json(local, LOCAL_BASE) == _best_json(remote, CLUSTER_BASE)
    assert any(p.bred for g in state.generations for p in g.plans), "the run bred offspring"
