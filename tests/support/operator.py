"""The operator as a test runs it: ``python -m nora.operator`` as a subprocess, and the one fixture that
makes them.

:class:`OperatorProcess` serves one namespace with its own metrics and liveness ports and log; tests can
kill it (its process group, or the process alone) and start it again. The ``operators`` fixture (in
:mod:`tests.support.fixtures`) installs the CRDs, makes operators whose genome containers run the stand-in
trainer unless told otherwise, and stops every one of them when the test ends.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.controlplane import free_port
from tests.support.procs import ManagedProcess, tail
from tests.support.standin import standin_command, standin_test_command
from tests.support.waiting import wait_for


@dataclass
class OperatorProcess:
    """``python -m nora.operator`` serving ``namespace`` (start, kill, stop; log kept in ``workdir``)."""

    kubeconfig: Path
    namespace: str
    workdir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    metrics_port: int = field(default_factory=free_port)
    liveness_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.workdir / f"operator-{self.namespace}.log"

    def start(self) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "NORA_NAMESPACES": self.namespace,
            "NORA_METRICS_ADDRESS": "127.0.0.1",
            "NORA_METRICS_PORT": str(self.metrics_port),
            "NORA_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.liveness_port}/healthz",
            "NORA_RESYNC_SECONDS": "5",
            **self.env,
        }
        argv = [sys.executable, "-m", "nora.operator", "--verbose"]
        self.process = ManagedProcess(f"operator-{self.starts}", argv, self.log, env=env).start()
        self.starts += 1
        wait_for(self.healthy, timeout=120, what="the operator's liveness endpoint", on_timeout=self.describe)
        return self

    def healthy(self) -> bool:
        assert self.process is not None
        self.process.ensure_alive()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as reply:
            return bool(reply.status == 200)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:
            return str(reply.read().decode())

    def reconcile_passes(self) -> int:
        """Reconcile passes the operator has run so far (its ``nora_reconcile_duration_seconds_count``)."""
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == "nora_reconcile_duration_seconds_count":
                    return int(sample.value)
        raise AssertionError("the operator exports no nora_reconcile_duration_seconds_count")

    def kill(self) -> None:
        """SIGKILL the operator's whole process group (the operator and its breeding process)."""
        assert self.process is not None
        assert self.process.popen is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.popen.wait(timeout=30)

    def kill_process_only(self) -> None:
        """SIGKILL the operator process alone (not its group): its children must follow by themselves."""
        assert self.process is not None
        assert self.process.popen is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.popen.wait(timeout=30)

    def children(self) -> list[int]:
        """Process ids of the operator's child processes (the breeding process and its helpers)."""
        assert self.process is not None
        tasks = Path(f"/proc/{self.process.pid}/task")
        return sorted(int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split())

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=15)

    def describe(self) -> str:
        return f"operator log ({self.log}):\n{tail(self.log, 80)}"

    def tracebacks(self) -> int:
        return self.log.read_text(errors="replace").count("Traceback") if self.log.exists() else 0


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@dataclass
class Operators:
    """Makes operators for one test; :meth:`stop_all` stops them (the fixture calls it)."""

    kubeconfig: Path
    folder: Path
    made: list[OperatorProcess] = field(default_factory=list)

    def make(
        self,
        namespace: str,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        kubeconfig: Path | None = None,
        folder: Path | None = None,
        real_trainer: bool = False,
    ) -> OperatorProcess:
        """An operator (not started) whose genome containers run ``command`` (default: the stand-in, or
        with ``real_trainer`` the operator's own default, ``nora train``); the test-split Job runs the
        stand-in's ``--task`` mode, or with ``real_trainer`` ``nora test-score``."""
        workdir = folder or self.folder / f"operator-{len(self.made)}"
        workdir.mkdir(parents=True, exist_ok=True)
        train = list(command) if command is not None else standin_command(workdir)
        standin = {
            "NORA_TRAIN_COMMAND": json.dumps(train),
            "NORA_TEST_SCORE_COMMAND": json.dumps(standin_test_command(workdir)),
        }
        settings = {**({} if real_trainer else standin), **(env or {})}
        operator = OperatorProcess(kubeconfig or self.kubeconfig, namespace, workdir, env=settings)
        self.made.append(operator)
        return operator

    def start(self, namespace: str, **options: object) -> OperatorProcess:
        """:meth:`make` one and start it."""
        return self.make(namespace, **options).start()  # type: ignore[arg-type]

    def stop_all(self) -> None:
        for operator in self.made:
            operator.stop()
