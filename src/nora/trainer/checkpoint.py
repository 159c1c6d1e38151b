"""Preemption: on SIGTERM a training genome checkpoints to the store, and its next attempt resumes there.

A preempted Pod (Kueue suspension or eviction, spot reclaim, node drain) gets SIGTERM and
``terminationGracePeriodSeconds`` before SIGKILL. :class:`StopWatch` turns SIGTERM into
:class:`PreemptionError` (exit code 143) at once, except while DPO trains: then the step under way finishes,
:class:`CheckpointOnStop` writes a checkpoint and training stops. Under the genome's output prefix::

    checkpoint/step-<N>/adapter.safetensors                trainable (``default`` adapter) parameters
    checkpoint/step-<N>/optimizer.safetensors + .json      AdamW state (:mod:`nora.trainer.state_files`)
    checkpoint/step-<N>/scheduler.json                     the learning-rate schedule's state
    checkpoint/step-<N>/rng.safetensors + .json            Python, NumPy, torch and CUDA generators
    checkpoint/step-<N>/phases.safetensors + .json         the pairs, pairing stats, held-out reference
    checkpoint/step-<N>/trainer_state.json                 TRL/HF ``TrainerState``: step, log history
    checkpoint/latest.json                                 ``{"step", "fingerprint"}``, written last

The next attempt of the same task (same :func:`fingerprint`) skips sampling, and HF's resume logic
(data position, step count) runs through :class:`ResumableDPOTrainer`, whose loaders read these files
instead of HF's pickled ones: the run ends after the spec's ``maxSteps`` in total.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from peft import PeftModel
from safetensors.torch import load, save
from transformers import PreTrainedTokenizerBase, TrainerCallback, TrainerControl, TrainerState
from transformers.training_args import TrainingArguments

from nora.storage import StoreError, open_uri
from nora.trainer import state_files
from nora.trainer.errors import TrainerError
from nora.trainer.evaluate import PairLogps
from nora.trainer.irpo_config import IrpoConfig, TrainerJob
from nora.trainer.irpo_trainer import Pair, PretokenizedDPOTrainer, TrainStats, train_dpo

log = logging.getLogger("nora.trainer")
FOLDER, LATEST = "checkpoint", "latest.json"
TRAINER_STATE = "trainer_state.json"


class PreemptionError(BaseException):
    """SIGTERM stopped the run (exit code 143); a checkpoint was saved when training was under way.

    Like ``KeyboardInterrupt`` it is not an ``Exception``, so no library's ``except Exception`` swallows it
    when it is raised from the signal handler.
    """


class StopWatch:
    """Catches SIGTERM: raises :class:`PreemptionError` at once, or only notes it while :meth:`deferring`."""

    def __init__(self) -> None:
        self.requested = False
        self._deferring = False

    @classmethod
    @contextmanager
    def installed(cls) -> Iterator[StopWatch]:
        """A watch that receives this process's SIGTERM while inside (the previous handler after)."""
        watch = cls()
        previous = signal.signal(signal.SIGTERM, watch.handle)
        try:
            yield watch
        finally:
            signal.signal(signal.SIGTERM, previous)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        log.info("SIGTERM received%s", ": checkpointing after this step" if self._deferring else "")
        if not self._deferring:
            raise PreemptionError("stopped by SIGTERM before training was under way; nothing to checkpoint")

    @contextmanager
    def deferring(self) -> Iterator[None]:
        """While inside, SIGTERM only sets :attr:`requested` (training checks it after each step)."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False


@dataclass(frozen=True)
class Phases:
    """What the phases before training produced: resuming restores it instead of sampling again."""

    train_pairs: list[Pair]
    heldout_pairs: list[Pair]
    stats: dict[str, Any]
    reference: PairLogps | None


@dataclass(frozen=True)
class Resume:
    """A checkpoint downloaded for resuming: its step, its local folder and the restored phases."""

    step: int
    folder: Path
    phases: Phases


def fingerprint(job: TrainerJob) -> str:
    """A hash of everything that decides the run (not the generation batch size, which only paces it)."""
    settings = dataclasses.asdict(job)
    settings["irpo"].pop("generation_batch_size")
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _encode_phases(phases: Phases) -> tuple[bytes, bytes]:
    reference = dataclasses.asdict(phases.reference) if phases.reference else None
    return state_files.dump(
        {
            "train_pairs": [dataclasses.asdict(pair) for pair in phases.train_pairs],
            "heldout_pairs": [dataclasses.asdict(pair) for pair in phases.heldout_pairs],
            "stats": phases.stats,
            "reference": reference,
        }
    )


def _decode_phases(tensor_bytes: bytes, json_bytes: bytes) -> Phases:
    data = state_files.undump(tensor_bytes, json_bytes)
    reference = data["reference"]
    return Phases(
        train_pairs=[Pair(**pair) for pair in data["train_pairs"]],
        heldout_pairs=[Pair(**pair) for pair in data["heldout_pairs"]],
        stats=data["stats"],
        reference=PairLogps(**reference) if reference else None,
    )


@dataclass(frozen=True)
class Snapshot:
    """The training state at the end of a step, as files (name -> bytes)."""

    step: int
    files: dict[str, bytes]


def snapshot(state: TrainerState, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> Snapshot:
    """The files of a checkpoint at ``state.global_step`` (trainable parameters only)."""
    trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    files = {"adapter.safetensors": save(trainable)}
    for name, value in (("optimizer", optimizer.state_dict()), ("rng", state_files.capture_rng())):
        files[f"{name}.safetensors"], files[f"{name}.json"] = state_files.dump(value)
    files["scheduler.json"] = (json.dumps(scheduler.state_dict(), sort_keys=True) + "\n").encode()
    files[TRAINER_STATE] = (json.dumps(dataclasses.asdict(state), sort_keys=True) + "\n").encode()
    return Snapshot(step=state.global_step, files=files)


@dataclass(frozen=True)
class CheckpointStore:
    """Checkpoints of one task under ``<output>/checkpoint/``."""

    output: str
    fingerprint: str

    def save(self, shot: Snapshot, phases: Phases) -> None:
        """Upload every file of ``shot`` and the phases, then ``latest.json`` naming them."""
        files = dict(shot.files)
        files["phases.safetensors"], files["phases.json"] = _encode_phases(phases)
        try:
            store, key = open_uri(self.output)
            for name, data in sorted(files.items()):
                store.write_bytes(f"{key}/{FOLDER}/step-{shot.step}/{name}", data)
            latest = {"step": shot.step, "fingerprint": self.fingerprint}
            store.write_bytes(f"{key}/{FOLDER}/{LATEST}", json.dumps(latest).encode())
        except StoreError as error:
            raise TrainerError(f"output: cannot save the checkpoint: {error}") from None
        log.info("checkpoint: step %d saved to %s/%s/step-%d", shot.step, self.output, FOLDER, shot.step)

    def latest(self, scratch: Path) -> Resume | None:
        """The newest checkpoint of this task, downloaded into ``scratch``; ``None`` when there is none."""
        try:
            store, key = open_uri(self.output)
            if not store.exists(f"{key}/{FOLDER}/{LATEST}"):
                return None
            latest = json.loads(store.read_bytes(f"{key}/{FOLDER}/{LATEST}"))
            if latest.get("fingerprint") != self.fingerprint:
                log.info("checkpoint: %s belongs to another task; starting from step 0", self.output)
                return None
            prefix = f"{key}/{FOLDER}/step-{int(latest['step'])}"
            folder = scratch / "resume" / f"checkpoint-{int(latest['step'])}"
            folder.mkdir(parents=True, exist_ok=True)
            for object_key in store.list(prefix):
                (folder / object_key.rsplit("/", 1)[-1]).write_bytes(store.read_bytes(object_key))
        except (StoreError, ValueError, KeyError) as error:
            raise TrainerError(f"output: cannot read the checkpoint: {error}") from None
        phases = _decode_phases(
            (folder / "phases.safetensors").read_bytes(), (folder / "phases.json").read_bytes()
        )
        return Resume(step=int(latest["step"]), folder=folder, phases=phases)


@dataclass(frozen=True)
class TrainingRun:
    """How one attempt trains: its SIGTERM watch, checkpoint store, resume point, scratch and dropout."""

    watch: StopWatch
    store: CheckpointStore
    resume: Resume | None
    scratch: Path
    dropout: float

    @classmethod
    def prepare(cls, job: TrainerJob, scratch: Path, watch: StopWatch) -> TrainingRun:
        """The run of ``job``, resuming from its newest checkpoint when it trains and has one."""
        store = CheckpointStore(job.output, fingerprint(job))
        resume = store.latest(scratch) if job.irpo.trains else None
        return cls(watch, store, resume, scratch, job.adapter.dropout)


def _read_state(folder: Path, name: str) -> Any:
    return state_files.undump(
        (folder / f"{name}.safetensors").read_bytes(), (folder / f"{name}.json").read_bytes()
    )


class ResumableDPOTrainer(PretokenizedDPOTrainer):  # type: ignore[misc]
    """TRL's DPOTrainer resuming from a :class:`CheckpointStore` folder: safetensors and JSON, no pickle."""

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        saved = load((Path(resume_from_checkpoint) / "adapter.safetensors").read_bytes())
        target = model if model is not None else self.model
        if not isinstance(target, torch.nn.Module):
            raise TrainerError("internal error: the model is not ready to resume")
        params = dict(target.named_parameters())
        missing = sorted(set(saved) - set(params))
        if missing:
            raise TrainerError(f"checkpoint: parameter {missing[0]} is not in the model")
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        folder, optimizer, scheduler = Path(checkpoint), self.optimizer, self.lr_scheduler
        if optimizer is None or scheduler is None:
            raise TrainerError("internal error: the optimizer is not ready to resume")
        optimizer.load_state_dict(_read_state(folder, "optimizer"))
        scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text(encoding="utf-8")))

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is not None:
            state_files.restore_rng(_read_state(Path(checkpoint), "rng"))


class CheckpointOnStop(TrainerCallback):  # type: ignore[misc]
    """After the step during which SIGTERM came: save a checkpoint with ``save`` and stop training."""

    def __init__(self, watch: StopWatch, save: Callable[[Snapshot], None]) -> None:
        self.watch = watch
        self.save = save
        self.saved = False

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: torch.nn.Module | None = None,
        optimizer: Any = None,
        lr_scheduler: Any = None,
        **kwargs: Any,
    ) -> None:
        if not self.watch.requested or self.saved or model is None:
            return
        self.save(snapshot(state, model, optimizer, lr_scheduler))
        self.saved = True
        control.should_training_stop = True


def train_resumably(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    phases: Phases,
    config: IrpoConfig,
    run: TrainingRun,
) -> TrainStats:
    """:func:`~nora.trainer.irpo_trainer.train_dpo`, checkpointing on SIGTERM, resuming ``run.resume``.

    Raises:
        PreemptionError: SIGTERM came while training (after the checkpoint was saved).
    """
    callback = CheckpointOnStop(run.watch, lambda shot: run.store.save(shot, phases))
    with run.watch.deferring():
        stats = train_dpo(
            model,
            tokenizer,
            phases.train_pairs,
            config,
            run.scratch,
            run.dropout,
            trainer_class=ResumableDPOTrainer,
            callbacks=[callback],
            resume_from=run.resume.folder if run.resume else None,
        )
    if run.watch.requested:
        raise PreemptionError(
            f"stopped by SIGTERM at training step {stats.steps}/{config.max_steps}; checkpoint saved"
        )
    return stats
