"""The operator end to end: the real trainer in genome Jobs on the real control plane and S3 server.

Two identical Populations of the toy model evolve side by side in two namespaces, each with its own
operator: ``steady`` is never disturbed; ``bumpy``'s operator is killed (SIGKILL) while its Jobs run and
again while it breeds. ``steady`` must end Succeeded with its lineage, fitness and an exported adapter
that PEFT loads; ``bumpy`` must end with exactly the same adapters and fitness, and no Job twice.
The trainer is deterministic on CPU for a given genome.json and thread count (checked: same bytes),
and both Populations' Pods run with the same environment, so exact equality is expected.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.integration.test_operator_support import (
    get_generation,
    get_population,
    jobs_of,
    population,
    s3_objects,
    s3_secret,
    wait_phase,
)
from tests.support.controlplane import ControlPlane
from tests.support.crds import install_crds
from tests.support.fixtures import Kubectl
from tests.support.kubeapi import JSON, KubeHTTP
from tests.support.kubelet import ProcessKubelet
from tests.support.operator import OperatorProcess, Operators
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRAINING = {
    "method": "irpo",
    "samplesPerPrompt": 4,
    "pairsPerPrompt": 1,
    "maxSteps": 4,
    "batchSize": 4,
    "maxPrompts": 8,
    "evalPrompts": 16,
    "maxNewTokens": 48,
    "learningRate": 0.002,
}


@dataclass(frozen=True)
class Evolution:
    steady: str
    bumpy: str
    model: Path
    caught_breeding: JSON
    operators: dict[str, OperatorProcess]


def _toy(folder: Path) -> tuple[Path, Path]:
    from nora.toy.data import write_dataset
    from nora.toy.model import build_toy_model

    model = build_toy_model(folder / "model")
    write_dataset(folder / "data")
    return model, folder / "data"


def _running(api: KubeHTTP, namespace: str) -> bool:
    return any((j.get("status") or {}).get("active") for j in jobs_of(api, namespace, "toy"))


def _nearly_done(api: KubeHTTP, namespace: str) -> bool:
    """Generation 0 has one genome left (so generation 1 is about to be bred)."""
    generation = get_generation(api, namespace, "toy-g0")
    return bool(generation and (generation.get("status") or {}).get("succeeded", 0) >= 3)


@pytest.fixture(scope="module")
def evolution(
    control_plane: ControlPlane,
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    kubelet: ProcessKubelet,
    s3_server: S3Server,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Evolution]:
    install_crds(kubectl)
    work = tmp_path_factory.mktemp("operator-e2e")
    model, data = _toy(work / "toy")
    names = ("e2e-steady", "e2e-bumpy")
    made = Operators(kubeconfig=control_plane.kubeconfig, folder=work)
    operators: dict[str, OperatorProcess] = {}
    try:
        for ns in names:
            kube_api.post("/api/v1/namespaces", {"metadata": {"name": ns}})
            s3_secret(kube_api, ns, s3_server)
            operators[ns] = made.start(ns, folder=work, real_trainer=True)
            manifest = population(
                "toy",
                ns,
                s3_server,
                maxGenerations=3,
                seed=11,
                training=TRAINING,
                baseModel={"uri": model.resolve().as_uri()},
                dataset={"train": (data / "train.jsonl").as_uri(), "eval": (data / "eval.jsonl").as_uri()},
                template={"env": [{"name": "NORA_NUM_THREADS", "value": "1"}]},
                storage={
                    "bucket": s3_server.bucket,
                    "endpoint": s3_server.endpoint,
                    "secretRef": {"name": "s3"},
                    "prefix": f"{ns}-prefix",
                },
            )
            kubectl("apply", "-f", "-", stdin=manifest)
        bumpy = operators[names[1]]
        wait_for(lambda: _running(kube_api, names[1]), timeout=300, what="a genome Job running")
        bumpy.kill()
        bumpy.start()
        wait_for(lambda: _nearly_done(kube_api, names[1]), timeout=900, what="g0 nearly done", interval=0.5)
        caught = wait_for(
            lambda: get_generation(kube_api, names[1], "toy-g1"), timeout=600, what="g1", interval=0.02
        )
        bumpy.kill()
        bumpy.start()
        for ns in names:
            wait_phase(kube_api, ns, "toy", ("Succeeded", "Failed"), 1500, operators[ns])
        yield Evolution(names[0], names[1], model, caught, operators)
    finally:
        made.stop_all()


def test_a_toy_population_evolves_to_succeeded_with_the_real_trainer(
    evolution: Evolution, kube_api: KubeHTTP, kubectl: Kubectl, s3_server: S3Server, tmp_path: Path
) -> None:
    ns = evolution.steady
    status = get_population(kube_api, ns, "toy")["status"]
    assert (status["phase"], status["reason"], status["completedGenerations"]) == (
        "Succeeded",
        "MaxGenerations",
        3,
    )
    jobs = {j["metadata"]["name"]: j for j in jobs_of(kube_api, ns, "toy")}
    previous: set[str] = set()
    for number in range(3):
        generation = get_generation(kube_api, ns, f"toy-g{number}")
        assert generation is not None
        assert generation["status"]["phase"] == "Succeeded"
        for planned, result in zip(
            generation["spec"]["genomes"], generation["status"]["genomes"], strict=True
        ):
            assert result["phase"] == "Succeeded"
            assert 0.0 <= result["fitness"] <= 1.0
            assert {"accuracy", "irpo_loss", "fitness"} <= set(result["metrics"])
            assert set(planned["parents"]) <= previous
            assert bool(planned["parents"]) == (number > 0)
            if planned["train"]:
                assert jobs[result["job"]]["status"]["succeeded"] == 1
        previous = {g["id"] for g in generation["spec"]["genomes"]}
    assert len(jobs) == 4 + 3 + 3  # the elite of each later generation is not retrained

    best = status["best"]
    folder = tmp_path / "best"
    folder.mkdir()
    for name, data in s3_objects(s3_server, f"{ns}-prefix/{ns}/toy/best/").items():
        (folder / name).write_bytes(data)
    assert json.loads((folder / "best.json").read_text())["fitness"] == best["fitness"]

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(evolution.model)
    tuned = PeftModel.from_pretrained(base, folder)
    logits = tuned(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape[:2] == (1, 3)
    assert torch.isfinite(logits).all()

    table = kubectl("get", "populations", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "GENERATION", "BEST", "AGE"]
    assert table[1].split()[:3] == ["toy", "Succeeded", "2"]
    assert float(table[1].split()[3]) == pytest.approx(best["fitness"])
    assert evolution.operators[ns].tracebacks() == 0, evolution.operators[ns].describe()


def _comparable(api: KubeHTTP, namespace: str) -> list[Any]:
    views = []
    for number in range(3):
        body = get_generation(api, namespace, f"toy-g{number}")
        assert body is not None
        views.append({"spec": body["spec"]["genomes"], "status": body["status"]["genomes"]})
    return json.loads(json.dumps(views).replace(f"{namespace}-prefix/{namespace}/", "PREFIX/"))


def test_killing_the_operator_while_jobs_run_and_while_it_breeds_changes_nothing(
    evolution: Evolution, kube_api: KubeHTTP, kubelet: ProcessKubelet, s3_server: S3Server
) -> None:
    steady, bumpy = evolution.steady, evolution.bumpy
    assert (evolution.caught_breeding.get("status") or {}).get("phase") in (None, "Breeding")
    assert evolution.operators[bumpy].starts == 3
    assert _comparable(kube_api, steady) == _comparable(kube_api, bumpy)

    def adapters(ns: str) -> dict[str, bytes]:
        found = s3_objects(s3_server, f"{ns}-prefix/{ns}/toy/")
        return {
            k: v
            for k, v in found.items()
            if "/start/" in k or "/adapter/" in k or k.startswith("best/adapter")
        }

    ours, theirs = adapters(steady), adapters(bumpy)
    assert len(ours) >= 4 * 10
    assert ours == theirs
    assert (
        get_population(kube_api, steady, "toy")["status"]["best"]["fitness"]
        == (get_population(kube_api, bumpy, "toy")["status"]["best"]["fitness"])
    )
    pods = Counter(name.rsplit("-", 1)[0] for ns, name in kubelet.pods_run() if ns == bumpy)
    assert set(pods.values()) == {1}
    assert len(pods) == 10, pods  # no Job created or run twice
