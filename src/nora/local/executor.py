"""Run genomes as ``nora train`` subprocesses (one per worker slot, logs in the run folder), and the run's
test-split scoring as one ``nora test-score`` subprocess.

Children die with the driver (``PR_SET_PDEATHSIG``), so a killed ``nora run`` never leaves a trainer
writing behind the back of its resumption; an interrupted one (Ctrl-C) sends them SIGTERM first, so
a training under way saves a checkpoint that the next attempt resumes. With several GPUs each worker
slot gets its own ``CUDA_VISIBLE_DEVICES``; on CPU the cores are shared out through the thread-count
variables.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nora.evolution import contract

TRAIN_COMMAND: tuple[str, ...] = (sys.executable, "-m", "nora", "train", "--genome")
TEST_SCORE_COMMAND: tuple[str, ...] = (sys.executable, "-m", "nora", "test-score", "--task")
STOP_GRACE_SECONDS = 60.0
"""How long an interrupted ``nora run`` lets a trainer checkpoint before killing it."""
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Launch:
    """One attempt at one genome (or at the run's test-split scoring, with ``command``).

    Attributes:
        command: what runs before the task URI; ``None``: the executor's own (``nora train --genome``).
    """

    genome: str
    task_uri: str
    log_path: Path
    termination_log: Path
    env: Mapping[str, str]
    command: Sequence[str] | None = None


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: its exit code, the trainer's summary line (if any) and its failure reason."""

    exit_code: int
    summary: Mapping[str, Any] | None
    reason: str


class RunningGenome(Protocol):
    """A started attempt."""

    def poll(self) -> Outcome | None:
        """The outcome once the attempt has ended, else ``None``."""
        ...

    def kill(self) -> None: ...


class Executor(Protocol):
    """Starts attempts (the seam where tests put an in-process fake)."""

    def start(self, launch: Launch) -> RunningGenome: ...


_LIBC = ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def read_outcome(exit_code: int, log_path: Path, offset: int, termination_log: Path) -> Outcome:
    """Parse an attempt's log (from ``offset``) for the trainer's last JSON line and failure reason."""
    with log_path.open("rb") as log:
        log.seek(offset)
        lines = [line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    summary = contract.parse_summary_line(lines[-1]) if lines else None
    reason = termination_log.read_text().strip() if termination_log.exists() else ""
    if exit_code != 0 and not reason:
        reason = lines[-1] if lines else f"exited with code {exit_code} and printed nothing"
    return Outcome(exit_code=exit_code, summary=summary, reason=reason)


@dataclass
class _Subprocess:
    process: subprocess.Popen[bytes]
    launch: Launch
    offset: int

    def poll(self) -> Outcome | None:
        code = self.process.poll()
        if code is None:
            return None
        return read_outcome(code, self.launch.log_path, self.offset, self.launch.termination_log)

    def kill(self) -> None:
        """SIGTERM (the trainer checkpoints a training under way), then SIGKILL after the grace period."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


@dataclass(frozen=True)
class SubprocessExecutor:
    """Runs ``command + [task URI]`` per attempt (the launch's own command when it has one), appending its
    output to the genome's log."""

    command: Sequence[str] = TRAIN_COMMAND

    def start(self, launch: Launch) -> RunningGenome:
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        launch.termination_log.unlink(missing_ok=True)
        with launch.log_path.open("ab") as log:
            offset = log.tell()
            process = subprocess.Popen(
                [*(launch.command or self.command), launch.task_uri],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **launch.env},
                # The driver is single-threaded (its display refreshes on the main thread), so a
                # pre-exec hook is safe here.
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        return _Subprocess(process=process, launch=launch, offset=offset)


def worker_environment(slot: int, workers: int, gpus: int, cpus: int) -> dict[str, str]:
    """Per-slot variables: a GPU of its own when there are several, else a share of the CPU threads."""
    if gpus > 1:
        return {"CUDA_VISIBLE_DEVICES": str(slot % gpus)}
    threads = str(max(1, cpus // max(1, workers)))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, contract.ENV_NUM_THREADS: threads}
