"""``nora run``: evolve a Population on one machine, resumably, with genomes as local subprocesses.

The run folder holds ``state.json`` (rewritten atomically after every change), the store
(``store/``, the same key layout and ledger files as S3 on a cluster), per-genome logs (``logs/``) and,
at the end, the best adapter in PEFT format (``best/``). With ``spec.dataset.test`` the run ends with
one ``nora test-score`` subprocess (:mod:`nora.evolution.heldout` decides what it scores and records).
Killing the driver at any point loses nothing: on restart the plan of the current generation is
re-derived (deterministically), finished genomes are kept, and an attempt that was cut off is started
again from scratch (the test-split scoring too). The bookkeeping (results, history, best, verdict,
export) is :mod:`nora.evolution.ledger`'s and :mod:`nora.evolution.run_store`'s, as on a cluster; this
module only runs genomes and keeps the state in a folder.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nora.api.manifest import PopulationManifest
from nora.api.status import HistoryRow
from nora.evolution import breeding, contract, heldout, ledger, retraining, run_store
from nora.evolution.genome_store import download_folder
from nora.evolution.layout import adapter_owner, best_key, task_key
from nora.evolution.planning import GenerationPlan
from nora.evolution.records import GenomePlan, GenomeResult, summarize
from nora.evolution.strategies.plans import plan_generation
from nora.evolution.tasks import genome_task
from nora.local.display import Display, Snapshot, generation_line
from nora.local.executor import (
    TEST_SCORE_COMMAND,
    Executor,
    Launch,
    Outcome,
    RunningGenome,
    worker_environment,
)
from nora.local.state import RunState, load_state, resume_changes, save_state
from nora.storage import LocalStore

POLL_SECONDS = 0.2
TRANSIENT_BASE_SECONDS = 1.0
TRANSIENT_CAP_SECONDS = 60.0


class RunError(RuntimeError):
    """The run folder cannot be used for this manifest (the message says why and what to do)."""


@dataclass(frozen=True)
class RunConfig:
    """What to run and where."""

    manifest: PopulationManifest
    run_dir: Path
    workers: int = 1
    gpus: int = 0
    cpus: int = 1
    resolve: Callable[[str], str] = str


@dataclass
class _Attempt:
    handle: RunningGenome
    slot: int
    started: float


def transient_delay(failures: int) -> float:
    """The pause before re-running a genome after ``failures`` attempts in a row found the store
    unreachable: doubling from 1 s, at most a minute."""
    doubling: float = 2.0 ** min(max(0, failures - 1), 16)
    return min(TRANSIENT_CAP_SECONDS, TRANSIENT_BASE_SECONDS * doubling)


def retry_or_fail(result: GenomeResult, outcome: Outcome, backoff_limit: int) -> GenomeResult:
    """A failed attempt: Pending again while retries remain and a retry can help, else Failed.

    A preempted attempt (it checkpointed on SIGTERM) does not count: the next one resumes it. Nor does one
    that found the store unreachable (:data:`~nora.evolution.contract.EXIT_TRANSIENT`): the genome is not
    at fault.
    """
    message = ledger.clip(outcome.reason)
    if outcome.exit_code in (contract.EXIT_PREEMPTED, contract.EXIT_TRANSIENT):
        return result.update(phase="Pending", attempts=max(0, result.attempts - 1), message=message)
    if contract.retryable(outcome.exit_code) and result.attempts <= backoff_limit:
        return result.update(phase="Pending", message=message)
    return result.update(phase="Failed", message=message)


class LocalDriver:
    """Drives one Population to its end in ``config.run_dir``."""

    def __init__(
        self,
        config: RunConfig,
        executor: Executor,
        display: Display,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.spec = config.manifest.spec
        self.name = config.manifest.name
        self.prefix = self.spec.storage.prefix
        self.store = LocalStore(config.run_dir / "store")
        self.executor = executor
        self.display = display
        self.clock = clock
        self.started = clock()
        self.durations: list[float] = []
        self._transient: Counter[str] = Counter()  # attempts in a row that found the store unreachable
        self._due: dict[str, float] = {}  # when a genome backing off after such an attempt may run again

    def run(self) -> RunState:
        """Run (or resume) until the population succeeds or fails; returns the final state."""
        state = self._initial_state()
        self._save(state)
        while state.phase == "Running":
            state = self._score_test(state) if heldout.awaiting_test(state) else self._run_generation(state)
            self._save(state)
        if state.reason != retraining.CORRUPT_ADAPTER:  # the store's adapters cannot be trusted then
            self._export_best(state)
        self.display.event(f"{state.phase}: {state.message}")
        return state

    def _save(self, state: RunState) -> None:
        save_state(self.config.run_dir, state)

    def _initial_state(self) -> RunState:
        existing = load_state(self.config.run_dir)
        if existing is None:
            return RunState(population=self.name, spec=self.spec.to_json_dict(), phase="Running")
        changes = resume_changes(existing, self.spec)
        if existing.population != self.name or changes:
            raise RunError(
                f"{self.config.run_dir}: holds a run of a different manifest (population "
                f"{existing.population!r}): {'; '.join(changes) or 'metadata.name differs'}; only "
                "maxGenerations, stopping and parallelism may change on resume; use another --dir for a new "
                "run"
            )
        existing = ledger.resumed(existing, self.spec) or existing
        current = existing.current
        if current is None or current.finished:
            return existing
        interrupted = current.model_copy(
            update={
                "results": [
                    r.update(phase="Pending", attempts=max(0, r.attempts - 1)) if r.phase == "Running" else r
                    for r in current.results
                ]
            }
        )
        return existing.with_generation(interrupted)

    def _plan(self, state: RunState, number: int) -> GenerationPlan:
        history = [list(zip(g.plans, g.results, strict=True)) for g in state.generations[:number]]
        return plan_generation(self.spec, self.name, number, history)

    def _run_generation(self, state: RunState) -> RunState:
        number = state.generation
        plan = self._plan(state, number)
        current = state.current
        if current is None or current.number != number:
            earlier = {r.id: r for g in state.generations for r in g.results}
            current = ledger.GenerationRecord(
                number=number, plans=list(plan.genomes), results=ledger.initial_results(plan.genomes, earlier)
            )
            state = state.with_generation(current)
            self._save(state)
            run_store.write_generation(self.store, self.prefix, self.name, current)
        state = self._repair_parents(state, plan)
        if state.phase != "Running":
            return state
        self.display.event(f"generation {number}: breeding {len(plan.breeding)} offspring")
        for order in plan.breeding:
            breeding.execute(order, self.store)
        state = self._train(state, current)
        return self._conclude(state, number)

    def _repair_parents(self, state: RunState, plan: GenerationPlan) -> RunState:
        """Verify the adapters the offspring are bred from; re-train the genome of one that fails (as the
        operator does, :mod:`nora.evolution.retraining`), or end the run as ``CorruptAdapter``."""
        while plan.generation > 0:
            previous = state.generations[plan.generation - 1]
            try:
                run_store.verify_parents(self.store, plan.genomes, previous.results)
                return state
            except run_store.CorruptAdapterError as error:
                try:
                    retrain = self._retrain_of(state, error)
                except run_store.CorruptAdapterError as final:
                    message = ledger.clip(f"{final}; not bred from it", 4096)
                    update = {"phase": "Failed", "reason": retraining.CORRUPT_ADAPTER, "message": message}
                    return state.model_copy(update=update)
            state = self._retrain(state, retrain)
        return state

    def _retrain_of(self, state: RunState, error: run_store.CorruptAdapterError) -> retraining.Retrain:
        owner = adapter_owner(self.prefix, self.name, error.key)
        if owner is None or owner[0] >= len(state.generations):
            raise retraining.unrepairable(error, retraining.NOT_OWN)
        generation = state.generations[owner[0]]
        result, plan = generation.result(owner[1]), generation.plan(owner[1])
        return retraining.retrain_or_fail(
            error, owner, result.retrains, retraining.start_problem(self.store, plan)
        )

    def _retrain(self, state: RunState, retrain: retraining.Retrain) -> RunState:
        """Run the genome of ``retrain`` again; ``retrains`` counts it whatever its outcome."""
        self.display.event(f"{retrain.genome}: {retrain.reason}")
        generation = state.generations[retrain.generation]
        reason = ledger.clip(retrain.reason)
        again = generation.result(retrain.genome).update(phase="Pending", message=reason)
        state = self._train(state, generation.with_result(again))
        generation = state.generations[retrain.generation]
        done = generation.result(retrain.genome)
        done = done.update(
            retrains=retrain.attempt, message=reason if done.phase == "Succeeded" else done.message
        )
        state = state.with_generation(generation.with_result(done))
        run_store.write_generation(self.store, self.prefix, self.name, state.generations[retrain.generation])
        self._save(state)
        return state

    def _older(self, state: RunState) -> Callable[[Sequence[int]], list[HistoryRow]]:
        def rows(numbers: Sequence[int]) -> list[HistoryRow]:
            goal = self.spec.fitness.goal
            return [summarize(n, state.generations[n].results, goal) for n in numbers]

        return rows

    def _conclude(self, state: RunState, number: int) -> RunState:
        generation = state.generations[number]
        run_store.write_generation(self.store, self.prefix, self.name, generation)
        state, row = ledger.record_generation(state, generation, self.spec)
        decided = ledger.decision(self.spec, state, self._older(state))
        self.display.event(generation_line(generation, row, decided.message))
        state = heldout.hold_for_test(self.spec, ledger.conclude(state, decided, number))
        run_store.write_population(self.store, self.prefix, self.name, state.record())
        return state

    def _score_test(self, state: RunState) -> RunState:
        """Score the run's adapters on the test split (one ``nora test-score`` subprocess), then conclude."""
        task = heldout.plan_task(
            self.spec, self.name, state, state.generations, self.store.uri, self.config.resolve
        )
        key = heldout.write_task(self.store, self.spec, self.name, task)
        self.display.event(f"test split: scoring {len(task.adapters)} adapter(s) on {self.spec.dataset.test}")
        logs = self.config.run_dir / "logs"
        launch = Launch(
            genome=f"{self.name}-test",
            task_uri=self.store.uri(key),
            log_path=logs / "test-score.log",
            termination_log=logs / "test-score.termination",
            env=worker_environment(0, 1, self.config.gpus, self.config.cpus),
            command=TEST_SCORE_COMMAND,
        )
        outcome = self._attempt(launch)
        for _ in range(self.spec.retries.backoff_limit):
            if not contract.retryable(outcome.exit_code):
                break
            outcome = self._attempt(launch)
        if outcome.exit_code == contract.EXIT_SUCCEEDED:
            score = heldout.read_outcome(self.store, self.spec, self.name, state)
        else:
            score = heldout.failed_score(self.spec, state, outcome.reason)
        self.display.event(heldout.describe(score))
        state = heldout.finish(self.spec, state, score, self._older(state))
        run_store.write_population(self.store, self.prefix, self.name, state.record())
        return state

    def _attempt(self, launch: Launch) -> Outcome:
        """Run one attempt to its end (killed if the driver is interrupted)."""
        handle = self.executor.start(launch)
        try:
            while (outcome := handle.poll()) is None:
                time.sleep(POLL_SECONDS)
        except BaseException:
            handle.kill()
            raise
        return outcome

    def _train(self, state: RunState, generation: ledger.GenerationRecord) -> RunState:
        plans = {p.id: p for p in generation.plans}
        pending = [r.id for r in generation.results if not r.finished and plans[r.id].train]
        running: dict[str, _Attempt] = {}
        try:
            while pending or running:
                free = sorted(set(range(self.config.workers)) - {a.slot for a in running.values()})
                while free and (genome := self._next_due(pending)) is not None:
                    pending.remove(genome)
                    state = self._start(state, plans[genome], free.pop(0), running)
                finished = [(g, a, o) for g, a in running.items() if (o := a.handle.poll()) is not None]
                for genome, attempt, outcome in finished:
                    del running[genome]
                    self.durations.append(self.clock() - attempt.started)
                    state = self._record(state, plans[genome], outcome, pending)
                self.display.refresh(self._snapshot(state, running))
                if not finished:
                    time.sleep(POLL_SECONDS)
        except BaseException:
            for attempt in running.values():
                attempt.handle.kill()
            self._save(state)
            raise
        return state

    def _next_due(self, pending: Sequence[str]) -> str | None:
        """The first pending genome that is not backing off from an unreachable store."""
        now = self.clock()
        return next((g for g in pending if self._due.get(g, now) <= now), None)

    def _start(self, state: RunState, plan: GenomePlan, slot: int, running: dict[str, _Attempt]) -> RunState:
        task = genome_task(self.spec, self.name, plan, self.store.uri, self.config.resolve)
        key = task_key(self.prefix, self.name, plan.generation, plan.id)
        self.store.write_bytes(key, json.dumps(task.to_json_dict(), indent=2, sort_keys=True).encode())
        logs = self.config.run_dir / "logs"
        launch = Launch(
            genome=plan.id,
            task_uri=self.store.uri(key),
            log_path=logs / f"{plan.id}.log",
            termination_log=logs / f"{plan.id}.termination",
            env=worker_environment(slot, self.config.workers, self.config.gpus, self.config.cpus),
        )
        generation = state.generations[plan.generation]
        result = generation.result(plan.id)
        started = result.update(phase="Running", attempts=result.attempts + 1)
        state = state.with_generation(generation.with_result(started))
        self._save(state)
        running[plan.id] = _Attempt(handle=self.executor.start(launch), slot=slot, started=self.clock())
        self.display.event(f"{plan.id}: attempt {started.attempts} started")
        return state

    def _record(self, state: RunState, plan: GenomePlan, outcome: Outcome, pending: list[str]) -> RunState:
        generation = state.generations[plan.generation]
        result = generation.result(plan.id)
        if outcome.exit_code == contract.EXIT_SUCCEEDED:
            result = run_store.genome_outcome(self.store, self.prefix, self.name, plan, result)
        else:
            result = retry_or_fail(result, outcome, self.spec.retries.backoff_limit)
        self._back_off(plan.id, outcome)
        if result.phase == "Succeeded":
            self.display.event(f"{plan.id}: fitness {result.fitness:.4g}")
        elif result.phase == "Pending":
            pending.append(plan.id)
            self.display.event(f"{plan.id}: attempt {result.attempts} failed ({result.message}); retrying")
        else:
            self.display.event(f"{plan.id}: failed after {result.attempts} attempt(s) ({result.message})")
        state = state.with_generation(generation.with_result(result))
        self._save(state)
        return state

    def _back_off(self, genome: str, outcome: Outcome) -> None:
        """After an attempt that found the store unreachable: wait before the next one (doubling, capped)."""
        if outcome.exit_code != contract.EXIT_TRANSIENT:
            self._transient.pop(genome, None)
            self._due.pop(genome, None)
            return
        self._transient[genome] += 1
        delay = transient_delay(self._transient[genome])
        self._due[genome] = self.clock() + delay
        self.display.event(f"{genome}: the store is unreachable; trying again in {delay:.0f}s (not counted)")

    def _snapshot(self, state: RunState, running: Mapping[str, _Attempt]) -> Snapshot:
        current = state.current
        results = current.results if current else []
        remaining = sum(1 for r in results if not r.finished)
        average = sum(self.durations) / len(self.durations) if self.durations else None
        eta = average * remaining / max(1, self.config.workers) if average is not None else None
        scored = [r.fitness for r in results if r.fitness is not None]
        return Snapshot(
            generation=current.number if current else 0,
            max_generations=self.spec.max_generations,
            phases=current.counts() if current else {},
            best=state.best.fitness if state.best else None,
            mean=sum(scored) / len(scored) if scored else None,
            elapsed=self.clock() - self.started,
            eta=eta,
        )

    def _export_best(self, state: RunState) -> None:
        """Export the best adapter to the store's ``best/`` (``best.json`` last) and to ``RUN_DIR/best``."""
        if state.best is None:
            return
        run_store.export_best(self.store, self.prefix, self.name, state.best, state.test)
        exported = best_key(self.prefix, self.name)
        target = download_folder(self.store, exported, self.config.run_dir / "best")
        record = self.store.read_bytes(f"{exported}/{run_store.BEST_RECORD}")
        (target / run_store.BEST_RECORD).write_bytes(record)
