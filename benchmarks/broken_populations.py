"""Churn caused by broken Populations: Events, status writes and operator log bytes per minute.

The real operator (``python -m nora.operator --verbose``, the test fixtures' verbosity) runs against a
real kube-apiserver + etcd and S3 server (as in ``benchmarks/orchestration.py``) with ``--count`` broken
Populations that the apiserver accepts but that can never run, their genome Job template being refused:
half by the Kubernetes client's models (an env entry without a name), half by the apiserver (an invalid
``serviceAccountName``: a 422 whose text changes with its ``Audit-Id``). After a warm-up, it counts
for ``--seconds``: Events and Population status writes (from the apiserver's own request counters) and
the bytes and tracebacks the operator logged, and prints them per minute.

    python benchmarks/broken_populations.py                  # 20 Populations, 60 s after 30 s
    python benchmarks/broken_populations.py --count 4 --seconds 30
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.orchestration import NAMESPACE, _install, _start_cluster  # noqa: E402

from tests.support import s3  # noqa: E402
from tests.support.binaries import require  # noqa: E402
from tests.support.controlplane import Processes  # noqa: E402
from tests.support.kubeapi import KubeHTTP  # noqa: E402
from tests.support.manifests import population_body  # noqa: E402

GROUP = "/apis/nora.dev/v1alpha1"


def _requests(api: KubeHTTP) -> dict[str, float]:
    """Event creations and Population status writes so far (``apiserver_request_total``)."""
    counts = {"events": 0.0, "status": 0.0}
    for line in api.raw("/metrics").splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        value = float(line.rsplit(" ", 1)[1])
        if 'resource="events"' in line and ('verb="POST"' in line or 'verb="PATCH"' in line):
            counts["events"] += value
        if 'resource="populations"' in line and 'subresource="status"' in line and 'verb="PATCH"' in line:
            counts["status"] += value
    return counts


BROKEN_TEMPLATES = ({"env": [{"value": "a variable without a name"}]}, {"serviceAccountName": "Not_A_Name"})


def _populations(api: KubeHTTP, server: s3.S3Server, count: int) -> None:
    storage = {"bucket": server.bucket, "endpoint": server.endpoint, "secretRef": {"name": "s3"}}
    for index in range(count):
        template = BROKEN_TEMPLATES[index % len(BROKEN_TEMPLATES)]
        body = population_body(f"broken-{index}", NAMESPACE, storage=storage, template=template)
        api.post(f"{GROUP}/namespaces/{NAMESPACE}/populations", body)


def _operator(kubeconfig: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "NORA_NAMESPACES": NAMESPACE,
        "NORA_METRICS_PORT": "0",
        "NORA_LIVENESS_ENDPOINT": "",
        "NORA_RESYNC_SECONDS": "5",
    }
    with log.open("wb") as out:
        command = [sys.executable, "-m", "nora.operator", "--verbose"]
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def _measure(api: KubeHTTP, log: Path, warmup: float, seconds: float) -> dict[str, float]:
    time.sleep(warmup)
    before, size, tracebacks = _requests(api), log.stat().st_size, log.read_text(errors="replace")
    time.sleep(seconds)
    after, text = _requests(api), log.read_text(errors="replace")
    per_minute = 60.0 / seconds
    return {
        "events": (after["events"] - before["events"]) * per_minute,
        "status": (after["status"] - before["status"]) * per_minute,
        "log": (log.stat().st_size - size) * per_minute,
        "tracebacks": (text.count("Traceback") - tracebacks.count("Traceback")) * per_minute,
        "tracebacks_total": float(text.count("Traceback")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=60.0)
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
            _populations(api, server, args.count)
            log = args.operator_log or work / "operator.log"
            operator = _operator(kubeconfig, log)
            found = _measure(api, log, args.warmup, args.seconds)
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(timeout=30)
            procs.stop()
    print(f"\n{args.count} broken Populations, {args.seconds:.0f} s measured after {args.warmup:.0f} s")
    print("| Events/min | status writes/min | log KiB/min | tracebacks/min | tracebacks in all |")
    print("|---|---|---|---|---|")
    names = ("events", "status", "log", "tracebacks", "tracebacks_total")
    cells = [found[name] / (1024 if name == "log" else 1) for name in names]
    print("| " + " | ".join(f"{value:.0f}" for value in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
