"""A ``cmaes`` Population on the real control plane: the operator killed mid-run changes no result.

The stand-in trainer projects each genome's point record and scores the adapter's bytes, so every
generation's CMA-ES asks depend on the tells before it: a restarted operator that rebuilt the optimiser
any other way than by replaying them in order would plan different points, adapters and fitness.
"""

from __future__ import annotations

import pytest

from tests.integration.test_operator import _adapters, _generation_views
from tests.integration.test_operator_support import (
    get_generation,
    get_population,
    job_running,
    population,
    s3_objects,
    s3_secret,
    wait_phase,
)
from tests.support.crds import install_crds
from tests.support.fixtures import Kubectl
from tests.support.kubeapi import KubeHTTP
from tests.support.kubelet import ProcessKubelet
from tests.support.operator import OperatorProcess, Operators
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

CMAES: dict[str, object] = {
    "maxGenerations": 3,
    "strategy": {"method": "cmaes", "dimension": 16, "sigma": 0.5},
    "training": {"method": "none"},
}


@pytest.fixture(scope="module")
def crds(kubectl: Kubectl) -> None:
    install_crds(kubectl)


def test_a_killed_and_restarted_operator_replays_cmaes_to_the_same_result(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    kubelet: ProcessKubelet,
    namespace: str,
    s3_server: S3Server,
    operators: Operators,
    crds: None,
) -> None:
    steady, bumpy = namespace, f"{namespace}-b"
    kube_api.post("/api/v1/namespaces", {"metadata": {"name": bumpy}})
    try:
        started: dict[str, OperatorProcess] = {}
        for ns in (steady, bumpy):
            s3_secret(kube_api, ns, s3_server)
            started[ns] = operators.start(ns)
            storage = {
                "bucket": s3_server.bucket,
                "endpoint": s3_server.endpoint,
                "secretRef": {"name": "s3"},
                "prefix": f"{ns}-prefix",
            }
            kubectl("apply", "-f", "-", stdin=population("cma", ns, s3_server, storage=storage, **CMAES))

        operator = started[bumpy]
        wait_for(lambda: job_running(kube_api, bumpy, "cma"), timeout=120, what="a g0 Job running")
        operator.kill()  # while Jobs run
        operator.start()
        wait_for(
            lambda: get_generation(kube_api, bumpy, "cma-g1"),
            timeout=600,
            what="g1",
            interval=0.02,
            on_timeout=operator.describe,
        )
        operator.kill()  # while generation 1 is planned and bred: a replay of generation 0
        operator.start()
        wait_for(
            lambda: get_generation(kube_api, bumpy, "cma-g2"),
            timeout=600,
            what="g2",
            interval=0.02,
            on_timeout=operator.describe,
        )
        operator.kill()  # while generation 2 is planned and bred: a replay of generations 0 and 1
        operator.start()

        for ns in (steady, bumpy):
            wait_phase(kube_api, ns, "cma", ("Succeeded",), 600, started[ns])
        views = {ns: _generation_views(kube_api, ns, "cma", 3) for ns in (steady, bumpy)}
        assert views[steady] == views[bumpy]
        stored = s3_objects(s3_server, f"{steady}-prefix/{steady}/cma/")
        assert len([k for k in stored if k.endswith("/start/point.json")]) == 3 * 4
        adapters = {ns: _adapters(s3_server, f"{ns}-prefix/{ns}/cma/") for ns in (steady, bumpy)}
        assert adapters[steady] == adapters[bumpy]
        best = {ns: get_population(kube_api, ns, "cma")["status"]["best"] for ns in (steady, bumpy)}
        assert best[steady]["fitness"] == best[bumpy]["fitness"]
        assert operator.starts == 4
        assert kubelet.pods_run()  # the genomes ran as Pods of the process kubelet
    finally:
        kube_api.delete(f"/api/v1/namespaces/{bumpy}")
