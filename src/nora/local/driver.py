"""``nora run``: evolve a Population on one machine, resumably, with genomes as local subprocesses.

The run folder holds ``state.json`` (rewritten atomically after every change), the store
(``store/``, the same key layout as S3 on a cluster), per-genome logs (``logs/``) and, at the end, the
best adapter in PEFT format (``best/``). Killing the driver at any point loses nothing: on restart the
plan of the current generation is re-derived (deterministically), finished genomes are kept, and an
attempt that was cut off is started again from scratch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nora.api.manifest import PopulationManifest
from nora.evolution import breeding
from nora.evolution.genome_store import download_folder
from nora.evolution.layout import best_key, output_key, task_key, trained_adapter_key
from nora.evolution.planning import GenerationPlan, plan_initial, plan_next
from nora.evolution.records import GenomePlan, GenomeResult, summarize
from nora.evolution.stopping import decide
from nora.evolution.tasks import genome_task
from nora.local.executor import Executor, Launch, Outcome, RunningGenome, worker_environment
from nora.local.progress import Display, Snapshot
from nora.local.state import GenerationState, RunPhase, RunState, load_state, save_state, spec_digest
from nora.storage import LocalStore

POLL_SECONDS = 0.2


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
        self.store = LocalStore(config.run_dir / "store")
        self.executor = executor
        self.display = display
        self.clock = clock
        self.started = clock()
        self.durations: list[float] = []

    def run(self) -> RunState:
        """Run (or resume) until the population succeeds or fails; returns the final state."""
        state = self._initial_state()
        save_state(self.config.run_dir, state)
        while state.phase == "Running":
            state = self._run_generation(state)
            save_state(self.config.run_dir, state)
        if state.best:
            self._export_best(state)
        self.display.event(f"{state.phase}: {state.message}")
        return state

    def _initial_state(self) -> RunState:
        digest = spec_digest(self.spec.to_json_dict())
        existing = load_state(self.config.run_dir)
        if existing is None:
            return RunState(population=self.name, spec_digest=digest)
        if existing.population != self.name or existing.spec_digest != digest:
            raise RunError(
                f"{self.config.run_dir}: holds a run of a different manifest (population "
                f"{existing.population!r}); only maxGenerations, stopping and parallelism may change on "
                "resume; use another --dir for a new run"
            )
        raised = len(existing.history) < self.spec.max_generations
        if existing.phase == "Succeeded" and existing.reason == "MaxGenerations" and raised:
            existing = replace(existing, phase="Running", reason="", message="")
        current = existing.current
        if current is not None and not current.finished:
            interrupted = [
                replace(r, phase="Pending", attempts=max(0, r.attempts - 1)) if r.phase == "Running" else r
                for r in current.results
            ]
            existing = existing.with_generation(replace(current, results=tuple(interrupted)))
        return existing

    def _plan(self, state: RunState, number: int) -> GenerationPlan:
        if number == 0:
            return plan_initial(self.spec, self.name)
        previous = state.generations[number - 1]
        return plan_next(
            self.spec, self.name, number, list(zip(previous.plans, previous.results, strict=True))
        )

    def _first_results(self, state: RunState, plan: GenerationPlan) -> tuple[GenomeResult, ...]:
        previous = {r.id: r for g in state.generations for r in g.results}
        results = []
        for genome in plan.genomes:
            if genome.train:
                results.append(GenomeResult(id=genome.id))
            else:
                parent = previous[genome.parents[0]]
                results.append(
                    GenomeResult(
                        id=genome.id,
                        phase="Succeeded",
                        fitness=genome.fitness,
                        metrics=parent.metrics,
                        adapter=genome.adapter,
                    )
                )
        return tuple(results)

    def _run_generation(self, state: RunState) -> RunState:
        number = len(state.history)
        plan = self._plan(state, number)
        current = state.current
        if current is None or current.number != number:
            current = GenerationState(
                number=number, plans=plan.genomes, results=self._first_results(state, plan)
            )
            state = state.with_generation(current)
            save_state(self.config.run_dir, state)
        self.display.event(f"generation {number}: breeding {len(plan.breeding)} offspring")
        for order in plan.breeding:
            breeding.execute(order, self.store)
        state = self._train(state, current)
        return self._conclude(state, number)

    def _conclude(self, state: RunState, number: int) -> RunState:
        generation = state.generations[number]
        maximize = self.spec.fitness.goal == "maximize"
        row = summarize(number, generation.results, maximize)
        state = replace(state, history=(*state.history, row), best=self._best(state, row.best_genome, number))
        decision = decide(self.spec, state.history)
        self.display.event(f"generation {number}: best {row.best} mean {row.mean} ({decision.message})")
        if decision.verdict == "continue":
            return state
        phase: RunPhase = "Succeeded" if decision.verdict == "succeed" else "Failed"
        return replace(state, phase=phase, reason=decision.reason, message=decision.message)

    def _best(self, state: RunState, genome: str | None, number: int) -> Mapping[str, Any]:
        if genome is None:
            return state.best
        result = state.generations[number].result(genome)
        old = state.best.get("fitness")
        better = old is None or (
            result.fitness is not None
            and (result.fitness > old if self.spec.fitness.goal == "maximize" else result.fitness < old)
        )
        if not better:
            return state.best
        return {
            "genome": genome,
            "generation": number,
            "fitness": result.fitness,
            "adapter": result.adapter,
            "metrics": dict(result.metrics),
        }

    def _train(self, state: RunState, generation: GenerationState) -> RunState:
        plans = {p.id: p for p in generation.plans}
        pending = [r.id for r in generation.results if not r.finished and plans[r.id].train]
        running: dict[str, _Attempt] = {}
        try:
            while pending or running:
                free = sorted(set(range(self.config.workers)) - {a.slot for a in running.values()})
                while free and pending:
                    genome = pending.pop(0)
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
            save_state(self.config.run_dir, state)
            raise
        return state

    def _start(self, state: RunState, plan: GenomePlan, slot: int, running: dict[str, _Attempt]) -> RunState:
        prefix = self.spec.storage.prefix
        task = genome_task(self.spec, self.name, plan, self.store.uri, self.config.resolve)
        key = task_key(prefix, self.name, plan.generation, plan.id)
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
        started = replace(result, phase="Running", attempts=result.attempts + 1)
        state = state.with_generation(generation.with_result(started))
        save_state(self.config.run_dir, state)
        running[plan.id] = _Attempt(handle=self.executor.start(launch), slot=slot, started=self.clock())
        self.display.event(f"{plan.id}: attempt {started.attempts} started")
        return state

    def _record(self, state: RunState, plan: GenomePlan, outcome: Outcome, pending: list[str]) -> RunState:
        generation = state.generations[plan.generation]
        result = generation.result(plan.id)
        fitness = (outcome.summary or {}).get("fitness")
        if outcome.exit_code == 0 and isinstance(fitness, int | float):
            adapter = trained_adapter_key(self.spec.storage.prefix, self.name, plan.generation, plan.id)
            result = result.succeeded(float(fitness), self._headline_metrics(plan), adapter)
            self.display.event(f"{plan.id}: fitness {fitness:.4g}")
        elif result.attempts <= self.spec.retries.backoff_limit:
            result = replace(result, phase="Pending", message=outcome.reason)
            pending.append(plan.id)
            self.display.event(f"{plan.id}: attempt {result.attempts} failed ({outcome.reason}); retrying")
        else:
            result = replace(result, phase="Failed", message=outcome.reason)
            self.display.event(f"{plan.id}: failed after {result.attempts} attempts ({outcome.reason})")
        state = state.with_generation(generation.with_result(result))
        save_state(self.config.run_dir, state)
        return state

    def _headline_metrics(self, plan: GenomePlan) -> dict[str, float]:
        key = f"{output_key(self.spec.storage.prefix, self.name, plan.generation, plan.id)}/metrics.json"
        if not self.store.exists(key):
            return {}
        metrics = json.loads(self.store.read_bytes(key))
        return {
            k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }

    def _snapshot(self, state: RunState, running: Mapping[str, _Attempt]) -> Snapshot:
        current = state.current
        results = current.results if current else ()
        remaining = sum(1 for r in results if not r.finished)
        average = sum(self.durations) / len(self.durations) if self.durations else None
        eta = average * remaining / max(1, self.config.workers) if average is not None else None
        scored = [r.fitness for r in results if r.fitness is not None]
        return Snapshot(
            generation=current.number if current else 0,
            max_generations=self.spec.max_generations,
            phases={
                phase: sum(1 for r in results if r.phase == phase)
                for phase in ("Pending", "Running", "Succeeded", "Failed")
            },
            best=state.best.get("fitness"),
            mean=sum(scored) / len(scored) if scored else None,
            elapsed=self.clock() - self.started,
            eta=eta,
        )

    def _export_best(self, state: RunState) -> None:
        """Copy the best adapter into the store's ``best/`` and into ``RUN_DIR/best`` (PEFT format)."""
        adapter = str(state.best["adapter"])
        best = best_key(self.spec.storage.prefix, self.name)
        target = self.config.run_dir / "best"
        download_folder(self.store, adapter, target)
        for file in sorted(target.iterdir()):
            self.store.write_bytes(f"{best}/{file.name}", file.read_bytes())
        record = json.dumps(dict(state.best), indent=2, sort_keys=True).encode()
        self.store.write_bytes(f"{best}/best.json", record)
        (target / "best.json").write_bytes(record)
