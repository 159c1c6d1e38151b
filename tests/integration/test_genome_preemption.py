"""Kueue preemption of a genome Job on the real control plane: suspended mid-training, re-admitted, resumed.

The Job is what :func:`nora.operator.jobs.build_job` makes for a queued Population (``backoffLimit: 0``,
so one counted failure would fail it) and runs the real ``nora train`` on the toy model in the
process-kubelet. The test plays Kueue: it admits the Job (``suspend: false``), preempts it while DPO
trains (``suspend: true``: the Job controller deletes the Pod, the kubelet sends SIGTERM), then admits
it again. The trainer checkpoints on SIGTERM and exits 143, which the Job's ``podFailurePolicy``
ignores; the new Pod resumes from the checkpoint and the Job completes with the spec's total steps.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from nora.api.population import PopulationSpec
from nora.operator.jobs import JobRequest, build_job
from nora.operator.objects import ObjectRef
from nora.toy.data import write_dataset
from nora.toy.model import build_toy_model
from tests.support.kubeapi import JSON, KubeHTTP
from tests.support.kubelet import ProcessKubelet
from tests.support.waiting import wait_for
from tests.unit.test_trainer_genome import TINY_TRAINING, genome_json

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MAX_STEPS, GENOME = 60, "pre-g0-0"


def _job_body(namespace: str, task: Path) -> JSON:
    spec = PopulationSpec.model_validate(
        {
            "baseModel": {"uri": "s3://unused/model/"},
            "dataset": {"train": "s3://d/t", "eval": "s3://d/e"},
            "queueName": "team",
            "workloadPriorityClassName": "high",
            "retries": {"backoffLimit": 0},
            "template": {"env": [{"name": "NORA_NUM_THREADS", "value": "1"}]},
        }
    )
    owner = ObjectRef("nora.dev/v1alpha1", "Generation", namespace, "pre-g0", "uid-unused")
    command = ("python", "-m", "nora", "train", "--genome")
    job = build_job(JobRequest(owner, "pre", 0, GENOME, str(task), spec, command, ttl_seconds=600))
    del job["metadata"]["ownerReferences"]  # no Generation here: the garbage collector would delete it
    return job


def _job(kube_api: KubeHTTP, namespace: str) -> JSON:
    return kube_api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{GENOME}")


def _suspend(kube_api: KubeHTTP, namespace: str, suspend: bool) -> None:
    kube_api.patch(f"/apis/batch/v1/namespaces/{namespace}/jobs/{GENOME}", {"spec": {"suspend": suspend}})


def _conditions(job: JSON) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (job.get("status") or {}).get("conditions") or []}


def _pod_names(kube_api: KubeHTTP, namespace: str) -> list[str]:
    pods = kube_api.get(
        f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"batch.kubernetes.io/job-name={GENOME}"
    )
    return [p["metadata"]["name"] for p in pods["items"]]


def _log(kubelet: ProcessKubelet, namespace: str, pod: str) -> str:
    try:
        out = kubelet.output(namespace, pod)
    except KeyError:
        return ""
    return out.stdout + out.stderr


def test_a_preempted_genome_job_resumes_from_its_checkpoint(
    kube_api: KubeHTTP, kubelet: ProcessKubelet, namespace: str, tmp_path: Path
) -> None:
    toy = build_toy_model(tmp_path / "toy")
    data = write_dataset(tmp_path / "data", seed=0, n_train=32, n_eval=32)
    task = genome_json(tmp_path, toy, data, name=GENOME, training={**TINY_TRAINING, "maxSteps": MAX_STEPS})
    body = _job_body(namespace, task)
    assert body["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "high"
    kube_api.post(f"/apis/batch/v1/namespaces/{namespace}/jobs", body)
    _suspend(kube_api, namespace, False)  # Kueue admits it
    first = wait_for(
        lambda: next(iter(_pod_names(kube_api, namespace)), None), timeout=120, what="the first Pod"
    )
    wait_for(
        lambda: re.search(r"training: step \d+/60", _log(kubelet, namespace, first)),
        timeout=600,
        what="DPO steps in the first Pod",
        on_timeout=kubelet.describe,
    )
    _suspend(kube_api, namespace, True)  # Kueue preempts it: the Pod is deleted, the trainer gets SIGTERM
    wait_for(
        lambda: (
            _conditions(_job(kube_api, namespace)).get("Suspended") == "True"
            and not _pod_names(kube_api, namespace)
        ),
        timeout=120,
        what="the suspended Job without Pods",
        on_timeout=kubelet.describe,
    )
    first_log = _log(kubelet, namespace, first)
    step = int(re.findall(r"checkpoint: step (\d+) saved", first_log)[-1])
    assert kubelet.output(namespace, first).exit_code == 143
    _suspend(kube_api, namespace, False)  # admitted again
    done = wait_for(
        lambda: _conditions(_job(kube_api, namespace)).get("Complete") == "True" or None,
        timeout=900,
        what="the Job to complete",
        on_timeout=kubelet.describe,
    )
    assert done
    job = _job(kube_api, namespace)
    assert _conditions(job).get("Failed") != "True"
    second = [name for namespace_, name in kubelet.pods_run() if namespace_ == namespace and name != first]
    assert len(second) == 1, kubelet.pods_run()
    assert f"resumed from step {step} of {MAX_STEPS}" in _log(kubelet, namespace, second[0])
    metrics: dict[str, Any] = json.loads((tmp_path / GENOME / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["training"]["steps"] == MAX_STEPS
