"""Orchestration overhead of the operator: from a generation's last Job finishing to the next
generation's Jobs existing, split into breeding and everything else, and the operator's memory.

The real operator (``python -m nora.operator``) runs against a real kube-apiserver + etcd and a real S3
server (versitygw), built as for the tests. Job outcomes are faked, instantly: there is no Job controller
and no kubelet; this script plays both. For each Job the operator creates it writes the genome's
output (its starting adapter, or a fresh one in generation 0, plus a metrics.json with a fitness) to S3
and marks the Job Complete through the status subresource, the way the Job controller would. So the
numbers measure the operator alone: reading outcomes, recording them, summarizing, planning, breeding
(crossover + mutation of real LoRA adapters, 2 target modules of 64x64 at rank 4, in the operator's
breeding process, streaming from and to S3), writing genome.json tasks and creating Jobs.

    python benchmarks/orchestration.py                    # populations of 8, 64 and 256 genomes
    python benchmarks/orchestration.py --sizes 8 --generations 2
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import certs, s3, standin  # noqa: E402
from tests.support.binaries import require  # noqa: E402
from tests.support.controlplane import Processes, start_apiserver, start_etcd, write_kubeconfig  # noqa: E402
from tests.support.kubeapi import MERGE_PATCH, KubeHTTP  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

NAMESPACE = "bench"
GROUP = "/apis/nora.dev/v1alpha1"


@dataclass
class Transition:
    """One generation boundary: last Job finished -> every Job of the next generation exists."""

    size: int
    generation: int
    total: float
    breeding: float

    @property
    def other(self) -> float:
        return self.total - self.breeding


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class FakeKubelet:
    """Completes genome Jobs instantly: writes their outputs to S3 and marks them Complete."""

    def __init__(self, api: KubeHTTP, server: s3.S3Server) -> None:
        from nora.storage import S3Store

        self.api = api
        self.store = S3Store(server.bucket, server.client())
        self.pool = ThreadPoolExecutor(16)

    def jobs(self, population: str, generation: int) -> list[dict[str, Any]]:
        selector = f"nora.dev/population={population},nora.dev/generation={generation}"
        return list(
            self.api.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", labelSelector=selector)["items"]
        )

    def count(self, population: str, generation: int) -> int:
        """How many Jobs of the generation exist (a metadata-only list: cheap to poll)."""
        selector = f"nora.dev/population={population},nora.dev/generation={generation}"
        url = f"{self.api.server}/apis/batch/v1/namespaces/{NAMESPACE}/jobs?labelSelector={quote(selector)}"
        request = urllib.request.Request(url)
        request.add_header("Authorization", f"Bearer {self.api.token}")
        request.add_header("Accept", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
        context = ssl.create_default_context(cafile=str(self.api.ca_cert))
        with urllib.request.urlopen(request, timeout=30, context=context) as reply:
            return len(json.loads(reply.read())["items"])

    def _output(self, job: dict[str, Any]) -> None:
        standin.train(job["metadata"]["annotations"]["nora.dev/task"])

    def _complete(self, job: dict[str, Any]) -> None:
        self._output(job)
        now = _now()
        status = {
            "startTime": now,
            "completionTime": now,
            "succeeded": 1,
            "active": 0,
            "ready": 0,
            "conditions": [
                {
                    "type": "SuccessCriteriaMet",
                    "status": "True",
                    "lastTransitionTime": now,
                    "lastProbeTime": now,
                },
                {"type": "Complete", "status": "True", "lastTransitionTime": now, "lastProbeTime": now},
            ],
        }
        name = job["metadata"]["name"]
        path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}/status"
        self.api.request("PATCH", path, {"status": status}, content_type=MERGE_PATCH)

    def complete_all(self, jobs: list[dict[str, Any]]) -> float:
        """Finish ``jobs``; the time the last one was marked Complete."""
        list(self.pool.map(self._complete, jobs))
        return time.monotonic()


def _population(size: int, generations: int, server: s3.S3Server) -> dict[str, Any]:
    return {
        "apiVersion": "nora.dev/v1alpha1",
        "kind": "Population",
        "metadata": {"name": f"bench-{size}", "namespace": NAMESPACE},
        "spec": {
            "baseModel": {"uri": "file:///models/base"},
            "dataset": {"train": "file:///data/train.jsonl", "eval": "file:///data/eval.jsonl"},
            "populationSize": size,
            "maxGenerations": generations,
            "seed": size,
            "selection": {
                "method": "tournament",
                "survivors": max(2, size // 2),
                "elites": 1,
                "tournamentSize": 2,
            },
            "adapter": {"initialRank": 4, "alpha": 8, "targetModules": ["q_proj", "v_proj"]},
            "mutation": {"maxRank": 8},
            "training": {"method": "none"},
            "parallelism": size,
            "retries": {"backoffLimit": 0},
            "storage": {"bucket": server.bucket, "endpoint": server.endpoint, "secretRef": {"name": "s3"}},
        },
    }


def _breeding_seconds(api: KubeHTTP, population: str, generation: int) -> float:
    body = api.get(f"{GROUP}/namespaces/{NAMESPACE}/generations/{population}-g{generation}")
    return float((body.get("status") or {}).get("breedingSeconds") or 0.0)


def _wait_jobs(fake: FakeKubelet, population: str, generation: int, count: int) -> float:
    """Wait until ``count`` Jobs of the generation exist; the time they did."""
    wait_for(
        lambda: fake.count(population, generation) >= count,
        timeout=900,
        what=f"{count} Jobs of {population}-g{generation}",
        interval=0.05,
    )
    return time.monotonic()


def run_population(
    api: KubeHTTP, fake: FakeKubelet, server: s3.S3Server, size: int, generations: int
) -> list[Transition]:
    document = _population(size, generations, server)
    name = document["metadata"]["name"]
    api.post(f"{GROUP}/namespaces/{NAMESPACE}/populations", document)
    transitions = []
    _wait_jobs(fake, name, 0, size)
    for generation in range(generations):
        finished = fake.complete_all(fake.jobs(name, generation))
        if generation + 1 == generations:
            break
        existing = _wait_jobs(fake, name, generation + 1, size - 1)  # the elite is not retrained
        total = existing - finished
        breeding = _breeding_seconds(api, name, generation + 1)
        transitions.append(Transition(size, generation + 1, total, breeding))
        print(
            f"  {name}: g{generation} -> g{generation + 1}: {total:.2f}s (breeding {breeding:.2f}s)",
            flush=True,
        )
    wait_for(
        lambda: (
            api.get(f"{GROUP}/namespaces/{NAMESPACE}/populations/{name}").get("status", {}).get("phase")
            == "Succeeded"
        ),
        timeout=300,
        what=f"{name} Succeeded",
    )
    return transitions


def _rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _start_cluster(work: Path, procs: Processes) -> tuple[KubeHTTP, Path]:
    binaries = require("etcd", "kube-apiserver")
    creds = certs.generate(work / "pki")
    etcd = start_etcd(procs, binaries["etcd"], work)
    server = start_apiserver(procs, binaries["kube-apiserver"], work, creds, etcd)
    kubeconfig = write_kubeconfig(work / "admin.kubeconfig", server, creds.ca_cert, creds.admin_token)
    return KubeHTTP(server=server, token=creds.admin_token, ca_cert=creds.ca_cert), kubeconfig


def _install(api: KubeHTTP, kubeconfig: Path, server: s3.S3Server) -> None:
    subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", "apply", "-f", str(REPO / "crds")],
        check=True,
        capture_output=True,
    )
    for crd in ("populations.nora.dev", "generations.nora.dev"):
        subprocess.run(
            [
                "kubectl",
                f"--kubeconfig={kubeconfig}",
                "wait",
                "--for=condition=Established",
                f"crd/{crd}",
                "--timeout=60s",
            ],
            check=True,
            capture_output=True,
        )
    api.post("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    secret = {"AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key}
    api.post(f"/api/v1/namespaces/{NAMESPACE}/secrets", {"metadata": {"name": "s3"}, "stringData": secret})


def _operator(kubeconfig: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "NORA_NAMESPACES": NAMESPACE,
        "NORA_METRICS_PORT": "0",
        "NORA_LIVENESS_ENDPOINT": "",
        "NORA_API_WORKERS": "16",
        "NORA_BREEDING_WORKERS": "2",
        "NORA_MIN_INTERVAL_SECONDS": "0.05",
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "nora.operator"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _report(transitions: list[Transition], memory: dict[int, dict[str, float]]) -> None:
    header = (
        "genomes",
        "transitions",
        "total s (mean / max)",
        "breeding s (mean)",
        "everything else s (mean / max)",
        "operator RSS MiB (now / peak)",
        "breeding process RSS MiB (now / peak)",
    )
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for size in sorted({t.size for t in transitions}):
        rows = [t for t in transitions if t.size == size]
        totals, others = [t.total for t in rows], [t.other for t in rows]
        breeding = sum(t.breeding for t in rows) / len(rows)
        m = memory[size]
        cells = (
            str(size),
            str(len(rows)),
            f"{sum(totals) / len(rows):.2f} / {max(totals):.2f}",
            f"{breeding:.2f}",
            f"{sum(others) / len(rows):.2f} / {max(others):.2f}",
            f"{m['rss']:.0f} / {m['peak']:.0f}",
            f"{m['breeder_rss']:.0f} / {m['breeder_peak']:.0f}",
        )
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--operator-log", type=Path, help="keep the operator's log here")
    args = parser.parse_args(argv)
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="nora-bench-") as scratch:
        work = Path(scratch)
        operator: subprocess.Popen[bytes] | None = None
        try:
            api, kubeconfig = _start_cluster(work, procs)
            server = s3.start(procs, require("versitygw")["versitygw"], work / "s3")
            _install(api, kubeconfig, server)
            operator = _operator(kubeconfig, args.operator_log or work / "operator.log")
            fake = FakeKubelet(api, server)
            transitions: list[Transition] = []
            memory: dict[int, dict[str, float]] = {}
            for size in args.sizes:
                print(f"population of {size} genomes, {args.generations} generations", flush=True)
                transitions += run_population(api, fake, server, size, args.generations)
                rss, peak = _rss_mib(operator.pid)
                breeders = [_rss_mib(child) for child in _children(operator.pid)]
                memory[size] = {
                    "rss": rss,
                    "peak": peak,
                    "breeder_rss": max((b[0] for b in breeders), default=0.0),
                    "breeder_peak": max((b[1] for b in breeders), default=0.0),
                }
            _report(transitions, memory)
        finally:
            if operator is not None:
                operator.terminate()
                try:
                    operator.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    operator.kill()
            procs.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
