"""Two operator replicas with kopf peering on the real control plane: one works, the other waits.

Both replicas serve one namespace through a ``KopfPeering`` object. The higher priority one runs the
Population; the other pauses and reconciles nothing. When the active replica is killed (SIGKILL, so it
cannot say goodbye) the other takes over once the dead one's peering record expires
(``NORA_PEERING_LIFETIME_SECONDS``) and finishes the Population, creating nothing twice.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.integration.test_operator_support import (
    job_running,
    jobs_of,
    population,
    s3_secret,
    wait_phase,
)
from tests.support.fixtures import Kubectl
from tests.support.kubeapi import JSON, KubeHTTP
from tests.support.kubelet import ProcessKubelet
from tests.support.operator import OperatorProcess, Operators
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

PEERING = "nora"
LIFETIME_SECONDS = 10


def _replica(operators: Operators, namespace: str, priority: int) -> OperatorProcess:
    env = {
        "NORA_PEERING": PEERING,
        "NORA_PRIORITY": str(priority),
        "NORA_PEERING_LIFETIME_SECONDS": str(LIFETIME_SECONDS),
    }
    return operators.make(namespace, env=env)


def _logged(operator: OperatorProcess, text: str) -> bool:
    return operator.log.exists() and text in operator.log.read_text(errors="replace")


def _peers(kube_api: KubeHTTP, namespace: str) -> JSON:
    body = kube_api.get(f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{PEERING}")
    return dict(body.get("status") or {})


def test_the_standby_replica_waits_then_takes_over_and_creates_nothing_twice(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    kubelet: ProcessKubelet,
    namespace: str,
    s3_server: S3Server,
    operators: Operators,
) -> None:
    kube_api.post(
        f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}},
    )
    s3_secret(kube_api, namespace, s3_server)
    active = _replica(operators, namespace, priority=200)
    standby = _replica(operators, namespace, priority=100)
    active.start()
    standby.start()
    wait_for(
        lambda: len(_peers(kube_api, namespace)) == 2,
        timeout=60,
        what="both replicas' records in the peering object",
        on_timeout=standby.describe,
    )
    assert _logged(standby, "Pausing the watch-stream for populations")  # it starts paused
    assert _logged(active, "Resuming operations after the pause")

    kubectl("apply", "-f", "-", stdin=population("pair", namespace, s3_server, maxGenerations=2))
    wait_for(
        lambda: job_running(kube_api, namespace, "pair"),
        timeout=120,
        what="a Job of the active replica running",
        on_timeout=active.describe,
    )
    wait_for(
        lambda: active.reconcile_passes() > 0,
        timeout=30,
        what="the pass that created the Job to be counted",
        on_timeout=active.describe,
    )
    assert standby.reconcile_passes() == 0  # paused: it has not touched the Population
    assert not _logged(standby, "Resuming operations")

    active.kill()
    wait_for(
        lambda: _logged(standby, "Resuming operations"),
        timeout=LIFETIME_SECONDS * 6,
        what="the standby replica to resume after the active one's record expired",
        on_timeout=standby.describe,
    )
    done = wait_phase(kube_api, namespace, "pair", ("Succeeded", "Failed"), 600, standby)
    assert (done["status"]["phase"], done["status"]["completedGenerations"]) == ("Succeeded", 2)
    assert standby.reconcile_passes() > 0

    jobs = jobs_of(kube_api, namespace, "pair")
    assert Counter(j["metadata"]["labels"]["nora.dev/generation"] for j in jobs) == {"0": 4, "1": 3}
    pods = Counter(name.rsplit("-", 1)[0] for ns, name in kubelet.pods_run() if ns == namespace)
    assert set(pods.values()) == {1}, pods  # every Job ran exactly one Pod: nothing ran twice
    assert standby.tracebacks() == 0, standby.describe()
