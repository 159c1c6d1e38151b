"""The local processes behind one Pod: start, restart, kill and report them as Kubernetes Pod status."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from nora.evolution import contract
from tests.support.kubeapi import JSON
from tests.support.podenv import expand

TERMINATION_LOG_ENV = contract.ENV_TERMINATION_LOG
MAX_MESSAGE_BYTES = 4096
FALLBACK_LOG_BYTES = 2048
RESTART_BACKOFF = (1.0, 30.0)  # first and maximum restart delay (the real kubelet uses 10 s .. 5 min)


def now_rfc3339() -> str:
    """The current time as the apiserver formats it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class ContainerRun:
    """One container of a Pod, run as a local process whose files live in ``directory``."""

    spec: JSON
    directory: Path
    popen: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    start_error: str | None = None
    restart_count: int = 0
    last_terminated: JSON | None = None
    waiting: tuple[str, str] = ("ContainerCreating", "")
    next_start: float = 0.0

    @property
    def name(self) -> str:
        """The container's name in the Pod spec."""
        return str(self.spec["name"])

    @property
    def stdout(self) -> Path:
        """The file collecting the process's stdout (all attempts)."""
        return self.directory / "stdout"

    @property
    def stderr(self) -> Path:
        """The file collecting the process's stderr (all attempts)."""
        return self.directory / "stderr"

    @property
    def termination_log(self) -> Path:
        """The local file standing in for the container's terminationMessagePath."""
        return self.directory / "termination-log"

    @property
    def running(self) -> bool:
        """True while the process runs."""
        return self.popen is not None and self.exit_code is None

    @property
    def terminated(self) -> bool:
        """True once the current attempt has ended (or could not start)."""
        return self.exit_code is not None

    def argv(self, env: Mapping[str, str]) -> list[str]:
        """command + args from the spec with $(VAR) expanded; nothing else is ever run."""
        words = [*(self.spec.get("command") or []), *(self.spec.get("args") or [])]
        if not self.spec.get("command"):
            raise ValueError("container has no `command`; the process kubelet never runs image entrypoints")
        return [expand(str(w), env) for w in words]

    def start(self, argv: list[str], env: Mapping[str, str], cwd: Path) -> None:
        """Start the process (no shell), stdout/stderr appended to files, in its own process group."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.termination_log.write_text("")
        self.started_at, self.finished_at, self.exit_code, self.start_error = now_rfc3339(), None, None, None
        with self.stdout.open("ab") as out, self.stderr.open("ab") as err:
            try:
                self.popen = subprocess.Popen(
                    argv,
                    env=dict(env),
                    cwd=cwd,
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as exc:
                self.popen, self.exit_code, self.start_error = None, 128, f"{type(exc).__name__}: {exc}"
                self.finished_at = now_rfc3339()

    def fail_to_start(self, message: str) -> None:
        """Record a start that cannot happen (e.g. no command)."""
        self.started_at = self.finished_at = now_rfc3339()
        self.exit_code, self.start_error = 128, message

    def poll(self) -> None:
        """Notice that the process has exited."""
        if self.popen is not None and self.exit_code is None:
            code = self.popen.poll()
            if code is not None:
                self.exit_code, self.finished_at = _exit_code(code), now_rfc3339()

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process group if it still runs."""
        if self.running and self.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def restart_due(self, policy: str) -> bool:
        """Whether the finished attempt should be restarted under the Pod's restartPolicy."""
        return self.terminated and (policy == "Always" or (policy == "OnFailure" and self.exit_code != 0))

    def prepare_restart(self) -> None:
        """Move the finished attempt to lastState and schedule the next one with exponential backoff."""
        self.last_terminated = self.terminated_state()
        delay = min(RESTART_BACKOFF[0] * 2**self.restart_count, RESTART_BACKOFF[1])
        self.restart_count += 1
        self.popen, self.exit_code, self.started_at, self.finished_at = None, None, None, None
        self.waiting, self.next_start = (
            ("CrashLoopBackOff", f"back-off {delay:.0f}s"),
            time.monotonic() + delay,
        )

    def message(self) -> str:
        """The termination message: the termination log, else (FallbackToLogsOnError, failed) the log tail."""
        if self.start_error:
            return self.start_error
        text = self.termination_log.read_bytes()[:MAX_MESSAGE_BYTES].decode(errors="replace")
        fallback = self.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        if not text and fallback and self.exit_code:
            tail = (self.stdout.read_bytes() + self.stderr.read_bytes())[-FALLBACK_LOG_BYTES:]
            text = tail.decode(errors="replace")
        return text

    def terminated_state(self) -> JSON:
        """The ``terminated`` state of the finished attempt."""
        reason = "StartError" if self.start_error else ("Completed" if self.exit_code == 0 else "Error")
        state: JSON = {
            "exitCode": self.exit_code,
            "reason": reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "containerID": self.container_id(),
        }
        message = self.message()
        if message:
            state["message"] = message
        return state

    def container_id(self) -> str:
        """A containerID naming the local process."""
        return f"process://{self.popen.pid}" if self.popen is not None else "process://none"

    def status(self) -> JSON:
        """This container's entry in containerStatuses."""
        if self.running:
            state: JSON = {"running": {"startedAt": self.started_at}}
        elif self.terminated:
            state = {"terminated": self.terminated_state()}
        else:
            reason, message = self.waiting
            state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        result: JSON = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.running,
            "started": self.running,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }
        if self.popen is not None or self.terminated:
            result["containerID"] = self.container_id()
        return result


@dataclass
class PodRun:
    """All containers of one Pod (init containers first, one at a time) and the Pod's lifecycle."""

    namespace: str
    name: str
    uid: str
    directory: Path
    restart_policy: str
    init: list[ContainerRun]
    main: list[ContainerRun]
    started_at: str = field(default_factory=now_rfc3339)
    started_mono: float = field(default_factory=time.monotonic)
    deadline_exceeded: bool = False
    deleting: bool = False
    kill_deadline: float | None = None
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)
    last_sent: JSON | None = None

    @classmethod
    def create(cls, pod: JSON, root: Path) -> PodRun:
        """A PodRun for ``pod`` with per-container folders under ``root``."""
        meta, spec = pod["metadata"], pod["spec"]
        directory = root / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"

        def runs(key: str) -> list[ContainerRun]:
            return [ContainerRun(spec=c, directory=directory / c["name"]) for c in spec.get(key) or []]

        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            directory=directory,
            restart_policy=spec.get("restartPolicy", "Always"),
            init=runs("initContainers"),
            main=runs("containers"),
        )

    @property
    def containers(self) -> list[ContainerRun]:
        """Init containers then regular containers."""
        return [*self.init, *self.main]

    def any_running(self) -> bool:
        """True while any process of the Pod runs."""
        return any(c.running for c in self.containers)

    def kill(self, sig: signal.Signals) -> None:
        """Signal every running process of the Pod."""
        for c in self.containers:
            c.signal(sig)

    def poll(self) -> None:
        """Notice exits."""
        for c in self.containers:
            c.poll()

    def init_done(self) -> bool:
        """True once every init container has exited 0."""
        return all(c.terminated and c.exit_code == 0 for c in self.init)

    def init_failed(self) -> bool:
        """True if an init container failed and will not be restarted."""
        return self.restart_policy == "Never" and any(c.terminated and c.exit_code != 0 for c in self.init)

    def phase(self) -> str:
        """The Pod phase the containers' states imply."""
        if self.deleting:  # the kubelet ends a deleted Pod in a terminal phase
            ok = self.init_done() and all(c.terminated and c.exit_code == 0 for c in self.main)
            return "Succeeded" if ok else "Failed"
        if self.deadline_exceeded or self.init_failed():
            return "Failed"
        if not self.init_done():
            return "Pending"
        if all(c.terminated for c in self.main):
            if all(c.exit_code == 0 for c in self.main):
                return "Succeeded"
            if self.restart_policy == "Never":
                return "Failed"
        if any(c.running or c.terminated or c.restart_count for c in self.main):
            return "Running"
        return "Pending"

    def advance(self, pod: JSON, start: Callable[[ContainerRun], None]) -> None:
        """One reconcile step: notice exits, enforce activeDeadlineSeconds, (re)start what is due."""
        self.poll()
        if self.phase() in ("Succeeded", "Failed"):
            return
        deadline = pod["spec"].get("activeDeadlineSeconds")
        if deadline is not None and time.monotonic() - self.started_mono > float(deadline):
            self.deadline_exceeded = True
            self.kill(signal.SIGKILL)
            return
        if not self.init_done():
            current = next(c for c in self.init if not (c.terminated and c.exit_code == 0))
            self._advance_one(current, "Never" if self.restart_policy == "Never" else "OnFailure", start)
            return
        for container in self.main:
            self._advance_one(container, self.restart_policy, start)

    @staticmethod
    def _advance_one(c: ContainerRun, policy: str, start: Callable[[ContainerRun], None]) -> None:
        if c.running:
            return
        if c.terminated:
            if c.restart_due(policy):
                c.prepare_restart()
            return
        if time.monotonic() >= c.next_start:
            start(c)

    def _condition(self, ctype: str, status: bool, reason: str | None = None) -> JSON:
        value = "True" if status else "False"
        previous = self.transitions.get(ctype)
        if previous is None or previous[0] != value:
            self.transitions[ctype] = (value, now_rfc3339())
        cond: JSON = {"type": ctype, "status": value, "lastTransitionTime": self.transitions[ctype][1]}
        if reason and not status:
            cond["reason"] = reason
        return cond

    def status(self) -> JSON:
        """The Pod ``status`` these processes imply (hostIP/podIP are 127.0.0.1)."""
        phase = self.phase()
        terminal = phase in ("Succeeded", "Failed")
        ready = not terminal and self.init_done() and bool(self.main) and all(c.running for c in self.main)
        not_ready = "PodCompleted" if terminal else "ContainersNotReady"
        status: JSON = {
            "phase": phase,
            "conditions": [
                self._condition("PodReadyToStartContainers", not terminal),
                self._condition("Initialized", self.init_done(), "ContainersNotInitialized"),
                self._condition("Ready", ready, not_ready),
                self._condition("ContainersReady", ready, not_ready),
                self._condition("PodScheduled", True),
            ],
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.started_at,
            "containerStatuses": [c.status() for c in self.main],
        }
        if self.init:
            status["initContainerStatuses"] = [c.status() for c in self.init]
        if self.deadline_exceeded:
            status["reason"] = "DeadlineExceeded"
            status["message"] = "Pod was active on the node longer than the specified deadline"
        return status
