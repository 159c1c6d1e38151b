"""Reconcile one Population: a level-triggered pass that reads what exists and does the next thing.

The state lives in the cluster and the store, never in this process: ``Population.status`` (current
generation, history, best), the ``Generation`` objects (plans and per-genome results), the Jobs (found by
deterministic name in the operator's index) and the genomes' outputs in S3. A pass:

1. validates the spec (problems: ``Ready=False`` with the reason, an Event, and nothing starts);
2. resumes a finished Population whose ``maxGenerations`` was raised;
3. makes sure Generation ``N`` exists (planned by the engine in the breeding process), breeds its
   offspring when it is ``Breeding``, then records the outcome of finished Jobs (metrics from S3,
   failure reasons from the Pods' termination messages) and starts Jobs up to ``parallelism``;
4. when every genome of ``N`` has finished: summarizes it into the bounded history, asks the engine
   whether to go on, and either moves to ``N + 1`` (same pass) or exports the best adapter to
   ``<prefix>/<population>/best/`` and ends with phase Succeeded or Failed.

A crash anywhere repeats at most the step it was in: every write is idempotent and every decision is
re-derived from stored state. It does what :mod:`nora.local.driver` does, with Kubernetes objects as
the state.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol

from nora.api.base import ApiValidationError
from nora.api.generation import GenerationStatus
from nora.api.manifest import parse_population
from nora.api.population import PopulationSpec
from nora.api.status import BestGenome, PopulationStatus
from nora.evolution.layout import best_key, output_key, trained_adapter_key
from nora.evolution.records import GenerationSummary, GenomePlan, GenomeResult, summarize
from nora.operator.breeder import Breeder, PlanRequest
from nora.operator.cluster import Cluster
from nora.operator.generations import (
    GenerationState,
    Location,
    clip,
    headline_metrics,
    initial_results,
    spec_json,
)
from nora.operator.jobs import JobRequest, JobView, build_job
from nora.operator.metrics import Metrics
from nora.operator.objects import ObjectRef, build_generation, generation_name, owner_uid
from nora.operator.population_status import (
    decision,
    record_generation,
    resumed,
    set_condition,
    status_patch,
)
from nora.operator.progress import plan_step
from nora.operator.settings import OperatorSettings
from nora.operator.storage import StorageAccess, Stores, copy_prefix, read_json, task_uri, write_task
from nora.storage import Store, StoreError

log = logging.getLogger("nora.operator")
FINAL = ("Succeeded", "Failed")
MAX_GENERATIONS_PER_PASS = 3
ERROR_BACKOFF_SECONDS = 10.0
BREEDING_CHUNK = 16
"""Offspring per breeding call (at least; at most 8 calls per generation)."""


class Clock(Protocol):
    """Wall time (for timestamps) and a monotonic clock (for durations)."""

    def now(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass(frozen=True)
class PopulationRef:
    namespace: str
    name: str


@dataclass(frozen=True)
class PassResult:
    """When the next pass is due at the latest (``None``: on the next event or resync)."""

    delay: float | None = None
    backoff: bool = False
    """After a failed pass: wait the whole ``delay`` (events, e.g. our own status patch, do not cut it)."""


def _reconcile_error(status: PopulationStatus) -> bool:
    ready = next((c for c in status.conditions if c.type == "Ready"), None)
    return ready is not None and ready.reason == "ReconcileError"


@dataclass(frozen=True)
class _Population:
    ref: ObjectRef
    spec: PopulationSpec
    spec_json: dict[str, Any]
    status: PopulationStatus
    observed: int | None
    access: StorageAccess
    store: Store
    location: Location

    @property
    def maximize(self) -> bool:
        return self.spec.fitness.goal == "maximize"


def cluster_problems(spec: PopulationSpec) -> list[str]:
    """What the operator cannot run that ``nora run`` could (the schema cannot tell)."""
    problems = []
    if not spec.storage.bucket:
        problems.append("spec.storage.bucket: required on a cluster (genome adapters live in S3)")
    uris = {
        "spec.baseModel.uri": spec.base_model.uri,
        "spec.dataset.train": spec.dataset.train,
        "spec.dataset.eval": spec.dataset.eval,
        **{f"spec.seedAdapters[{i}].uri": s.uri for i, s in enumerate(spec.seed_adapters)},
    }
    for path, uri in uris.items():
        if uri.startswith("toy://"):
            problems.append(f"{path}: toy:// URIs only work with `nora run`; use hf://, s3:// or file://")
    return problems


def iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class Reconciler:
    """Runs passes over Populations (thread-safe across different Populations)."""

    def __init__(
        self,
        cluster: Cluster,
        stores: Stores,
        breeder: Breeder,
        settings: OperatorSettings,
        metrics: Metrics,
        clock: Clock | None = None,
    ) -> None:
        self.cluster = cluster
        self.stores = stores
        self.breeder = breeder
        self.settings = settings
        self.metrics = metrics
        self.clock = clock or SystemClock()
        self._created: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()
        self._erroring: set[PopulationRef] = set()  # Populations whose Ready condition says ReconcileError
        self._pool = ThreadPoolExecutor(max(1, settings.api_workers), thread_name_prefix="nora-api")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ----- the pass ------------------------------------------------------------------------------
    def reconcile(self, ref: PopulationRef, jobs: Mapping[str, JobView]) -> PassResult:
        """One pass over ``ref``; errors are counted, reported on the object, and retried later."""
        began = self.clock.monotonic()
        try:
            result = self._pass(ref, jobs)
            if ref in self._erroring:
                self._clear_error(ref)
            return result
        except Exception as error:
            self.metrics.reconcile_errors.labels(ref.namespace, ref.name, type(error).__name__).inc()
            log.exception("reconciling %s/%s failed", ref.namespace, ref.name)
            self._report_error(ref, error)
            return PassResult(delay=ERROR_BACKOFF_SECONDS, backoff=True)
        finally:
            self.metrics.reconcile_duration.observe(self.clock.monotonic() - began)

    def _pass(self, ref: PopulationRef, jobs: Mapping[str, JobView]) -> PassResult:
        body = self.cluster.get_population(ref.namespace, ref.name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return PassResult()
        pop = self._accept(body)
        if pop is None:
            return PassResult()
        self._observe(pop.ref, pop.status)
        if _reconcile_error(pop.status):
            self._erroring.add(ref)
        again = resumed(pop.status, pop.spec)
        if again is not None:
            pop = self._save(pop, again)
        if pop.status.phase in FINAL:
            return PassResult()
        for _ in range(MAX_GENERATIONS_PER_PASS):
            pop = self._ensure_phase(pop)
            generation = self._generation(pop)
            if generation is None:
                return PassResult(delay=2.0)
            if pop.spec.suspend:
                self._advance(pop, generation, jobs, parallelism=0)
                return PassResult()
            generation = self._breed(pop, generation, jobs)
            generation = self._advance(pop, generation, jobs, pop.spec.parallelism)
            if not generation.finished:
                return PassResult()
            pop = self._conclude(pop, generation)
            if pop.status.phase in FINAL:
                return PassResult()
        return PassResult(delay=0.0)

    def _clear_error(self, ref: PopulationRef) -> None:
        """After a good pass, turn a ``Ready=False/ReconcileError`` condition back to ``Ready=True``."""
        self._erroring.discard(ref)
        body = self.cluster.get_population(ref.namespace, ref.name)
        status = PopulationStatus.model_validate((body or {}).get("status") or {})
        if body is None or body["metadata"].get("deletionTimestamp") or not _reconcile_error(status):
            return
        ready = set_condition(status, "Ready", True, "Accepted", "the spec is valid", iso(self.clock.now()))
        self.cluster.patch_population_status(ref.namespace, ref.name, status_patch(ready))

    def _report_error(self, ref: PopulationRef, error: Exception) -> None:
        try:
            body = self.cluster.get_population(ref.namespace, ref.name)
            if body is None:
                return
            status = PopulationStatus.model_validate(body.get("status") or {})
            message = clip(f"{type(error).__name__}: {error}")
            ready = next((c for c in status.conditions if c.type == "Ready"), None)
            if ready is not None and ready.message == message:
                return
            status = set_condition(status, "Ready", False, "ReconcileError", message, iso(self.clock.now()))
            self.cluster.patch_population_status(ref.namespace, ref.name, status_patch(status))
            self.cluster.post_event(ObjectRef.of(body), "Warning", "ReconcileError", message)
        except Exception:
            log.exception("could not report the error on %s/%s", ref.namespace, ref.name)

    # ----- acceptance and phases -----------------------------------------------------------------
    def _accept(self, body: dict[str, Any]) -> _Population | None:
        ref = ObjectRef.of(body)
        status = PopulationStatus.model_validate(body.get("status") or {})
        observed = body["metadata"].get("generation")
        try:
            spec = parse_population(body).spec
            problems = cluster_problems(spec)
        except ApiValidationError as error:
            spec, problems = None, error.problems
        if spec is None or problems:
            self._reject(ref, status, problems, observed)
            return None
        try:
            access = self.stores.access(ref.namespace, spec.storage)
        except (StoreError, OSError) as error:
            self._reject(ref, status, [str(error)], observed, reason="StorageUnavailable")
            return None
        return _Population(
            ref=ref,
            spec=spec,
            spec_json=spec.to_json_dict(),
            status=status,
            observed=observed,
            access=access,
            store=self.stores.store(access),
            location=Location(access.bucket),
        )

    def _reject(
        self,
        ref: ObjectRef,
        status: PopulationStatus,
        problems: Sequence[str],
        observed: int | None,
        reason: str = "InvalidSpec",
    ) -> None:
        message = "; ".join(problems)
        now = iso(self.clock.now())
        new = set_condition(status, "Ready", False, reason, message, now, observed)
        if status.phase not in FINAL:
            new = new.model_copy(
                update={"phase": "Pending", "reason": reason, "message": clip(message, 4096)}
            )
        new = new.model_copy(update={"observed_generation": observed})
        self._observe(ref, new)
        if status_patch(new) == status_patch(status):
            return
        self.cluster.patch_population_status(ref.namespace, ref.name, status_patch(new))
        self.cluster.post_event(ref, "Warning", reason, message)

    def _save(self, pop: _Population, status: PopulationStatus) -> _Population:
        """Write ``status`` if it changed; an Event when the phase changed."""
        if status_patch(status) == status_patch(pop.status):
            return pop
        self.cluster.patch_population_status(pop.ref.namespace, pop.ref.name, status_patch(status))
        self._observe(pop.ref, status)
        if status.phase != pop.status.phase:
            kind = "Warning" if status.phase == "Failed" else "Normal"
            self.cluster.post_event(pop.ref, kind, status.phase, status.message or status.phase)
        return replace(pop, status=status)

    def _observe(self, ref: ObjectRef, status: PopulationStatus) -> None:
        self.metrics.set_population(ref.namespace, ref.name, status.phase, status.generation)

    def _ensure_phase(self, pop: _Population) -> _Population:
        now = iso(self.clock.now())
        stopped = pop.spec.suspend
        status = pop.status  # a ReconcileError stays until a pass completes (then _clear_error)
        if not _reconcile_error(status):
            status = set_condition(status, "Ready", True, "Accepted", "the spec is valid", now, pop.observed)
        update: dict[str, Any] = {"observed_generation": pop.observed}
        if stopped and pop.status.phase != "Stopped":
            update.update(phase="Stopped", reason="Suspended", message="spec.suspend is true")
        elif not stopped and pop.status.phase in ("Pending", "Stopped"):
            update.update(phase="Running", reason="Evolving", message=f"generation {pop.status.generation}")
        if pop.status.start_time is None:
            update["start_time"] = now
        return self._save(pop, status.model_copy(update=update))

    # ----- generations ---------------------------------------------------------------------------
    def _load_generation(self, pop: _Population, number: int) -> GenerationState | None:
        body = self.cluster.get_generation(pop.ref.namespace, generation_name(pop.ref.name, number))
        if body is None or owner_uid(body) != pop.ref.uid:
            return None
        return GenerationState.from_body(body, pop.location)

    def _previous(self, pop: _Population, number: int) -> GenerationState | None:
        if number == 0:
            return None
        previous = self._load_generation(pop, number - 1)
        if previous is None or not previous.finished:
            raise RuntimeError(f"generation {number - 1} of {pop.ref.name} is missing or unfinished")
        return previous

    @staticmethod
    def _pairs(previous: GenerationState | None) -> tuple[tuple[dict[str, Any], dict[str, Any]], ...]:
        if previous is None:
            return ()
        return tuple(
            (p.to_json(), r.to_json()) for p, r in zip(previous.plans, previous.results, strict=True)
        )

    def _generation(self, pop: _Population) -> GenerationState | None:
        """Generation ``status.generation``, created (planned) if missing; ``None`` if its name is taken."""
        number = pop.status.generation
        name = generation_name(pop.ref.name, number)
        body = self.cluster.get_generation(pop.ref.namespace, name)
        previous = None
        if body is None:
            previous = self._previous(pop, number)
            request = PlanRequest(pop.spec_json, pop.ref.name, number, self._pairs(previous))
            plans = tuple(GenomePlan.from_json(p) for p in self.breeder.run(request).plans)
            spec = spec_json(pop.ref.name, plans, pop.spec_json, pop.location)
            body = self.cluster.create_generation(build_generation(pop.ref, number, spec))
        if owner_uid(body) != pop.ref.uid:
            return None
        generation = GenerationState.from_body(body, pop.location)
        if generation.phase is not None:
            return generation
        previous = previous or self._previous(pop, number)
        earlier = {r.id: r for r in previous.results} if previous else {}
        breeds = any(p.origin in ("crossover", "mutation") for p in generation.plans)
        generation = replace(
            generation,
            phase="Breeding" if breeds else "Running",
            results=initial_results(generation.plans, earlier),
            start_time=iso(self.clock.now()),
        )
        self._save_generation(pop, generation, None)
        return generation

    def _save_generation(
        self, pop: _Population, generation: GenerationState, before: GenerationState | None
    ) -> None:
        status = generation.status_json(pop.location, pop.maximize)
        if before is not None and status == before.status_json(pop.location, pop.maximize):
            return
        self.cluster.patch_generation_status(pop.ref.namespace, generation.ref.name, status)
        counts = {k: int(status.get(k.lower(), 0)) for k in ("Pending", "Running", "Succeeded", "Failed")}
        self.metrics.set_genomes(pop.ref.namespace, pop.ref.name, counts)
        if before is None or before.phase != generation.phase:
            kind = "Warning" if generation.phase == "Failed" else "Normal"
            message = f"generation {generation.number}: {generation.phase}"
            self.cluster.post_event(generation.ref, kind, str(generation.phase), message)

    def _breed(
        self, pop: _Population, generation: GenerationState, jobs: Mapping[str, JobView]
    ) -> GenerationState:
        """Breed the offspring in chunks; each chunk's Jobs are created while the next one breeds."""
        if generation.phase != "Breeding":
            return generation
        previous = self._previous(pop, generation.number)
        offspring = [p.id for p in generation.plans if p.origin in ("crossover", "mutation")]
        size = max(BREEDING_CHUNK, -(-len(offspring) // 8))
        chunks = [tuple(offspring[i : i + size]) for i in range(0, len(offspring), size)] or [()]
        request = PlanRequest(
            spec=generation.planned_with,
            population=pop.ref.name,
            generation=generation.number,
            previous=self._pairs(previous),
            access=pop.access,
            workers=self.settings.breeding_workers,
            tasks=True,
        )
        began = self.clock.monotonic()
        ready: set[str] = set()
        with ThreadPoolExecutor(1, thread_name_prefix="nora-breed") as runner:
            pending = runner.submit(self.breeder.run, replace(request, only=chunks[0]))
            for index in range(len(chunks)):
                result = pending.result()
                if index + 1 < len(chunks):
                    pending = runner.submit(self.breeder.run, replace(request, only=chunks[index + 1]))
                ready.update(chunks[index])
                if index + 1 < len(chunks):
                    generation = self._advance(pop, generation, jobs, pop.spec.parallelism, frozenset(ready))
        seconds = self.clock.monotonic() - began  # the whole step: planning, transfer and breeding
        log.info(
            "%s/%s: bred %d offspring in %.2fs", pop.ref.namespace, generation.ref.name, len(ready), seconds
        )
        if tuple(GenomePlan.from_json(p).id for p in result.plans) != tuple(p.id for p in generation.plans):
            raise RuntimeError(f"re-planning generation {generation.number} gave different genomes")
        self.metrics.breeding_duration.labels(pop.ref.namespace, pop.ref.name).observe(seconds)
        bred = replace(generation, phase="Running", breeding_seconds=round(seconds, 3), tasks_ready=True)
        self._save_generation(pop, bred, generation)
        return bred

    # ----- genomes and Jobs ----------------------------------------------------------------------
    def _created_set(
        self, pop: _Population, generation: GenerationState, jobs: Mapping[str, JobView]
    ) -> set[str]:
        with self._lock:
            created = self._created.setdefault((pop.ref.namespace, pop.ref.name), set())
            prefix = f"{generation.ref.name}-"
            created -= {n for n in created if not n.startswith(prefix) or n in jobs}
            return set(created)

    def _advance(
        self,
        pop: _Population,
        generation: GenerationState,
        jobs: Mapping[str, JobView],
        parallelism: int,
        ready: frozenset[str] | None = None,
    ) -> GenerationState:
        """Record finished Jobs, start new ones (only ``ready`` genomes, when given: bred and tasked)."""
        before = generation
        plan_spec = PopulationSpec.model_validate(generation.planned_with)
        step = plan_step(generation, jobs, self._created_set(pop, generation, jobs), parallelism, ready)
        generation = step.generation
        for genome in step.vanished:
            generation = self._vanished(pop, plan_spec, generation, genome)
        outcomes = list(
            self._pool.map(lambda view: self._outcome(pop, plan_spec, generation, view), step.finished)
        )
        for result in outcomes:
            generation = generation.with_result(result)
        if step.vanished:
            step = plan_step(generation, jobs, self._created_set(pop, generation, jobs), parallelism, ready)
        began = self.clock.monotonic()
        started = list(self._pool.map(lambda g: self._start(pop, plan_spec, generation, g), step.create))
        if started:
            seconds = self.clock.monotonic() - began
            log.info(
                "%s/%s: started %d Jobs in %.2fs",
                pop.ref.namespace,
                generation.ref.name,
                len(started),
                seconds,
            )
        for genome in started:
            generation = generation.with_result(
                replace(generation.result(genome), phase="Pending"), job=genome
            )
        if generation.finished and generation.phase == "Running":
            scored = any(r.scored for r in generation.results)
            generation = replace(
                generation, phase="Succeeded" if scored else "Failed", completion_time=iso(self.clock.now())
            )
        self._save_generation(pop, generation, before)
        return generation

    def _vanished(
        self, pop: _Population, plan_spec: PopulationSpec, generation: GenerationState, genome: str
    ) -> GenerationState:
        """A Job that disappeared before its outcome was recorded: use its output, else run it again."""
        view = JobView(name=genome, generation=generation.number, owner=generation.ref.uid, phase="Succeeded")
        result = self._outcome(pop, plan_spec, generation, view, quiet=True)
        if result.phase == "Succeeded":
            return generation.with_result(result)
        jobs = {k: v for k, v in generation.jobs.items() if k != genome}
        return replace(generation, jobs=jobs)

    def _outcome(
        self,
        pop: _Population,
        plan_spec: PopulationSpec,
        generation: GenerationState,
        view: JobView,
        quiet: bool = False,
    ) -> GenomeResult:
        result = generation.result(view.name)
        result = replace(result, attempts=max(result.attempts, view.attempts, 1))
        prefix = plan_spec.storage.prefix
        out = output_key(prefix, pop.ref.name, generation.number, view.name)
        if view.phase == "Succeeded":
            metrics = read_json(pop.store, f"{out}/metrics.json") or {}
            fitness = metrics.get("fitness")
            if isinstance(fitness, int | float) and not isinstance(fitness, bool):
                adapter = trained_adapter_key(prefix, pop.ref.name, generation.number, view.name)
                result = result.succeeded(float(fitness), headline_metrics(metrics), adapter)
            else:
                message = f"the Job succeeded but {pop.store.uri(out)}/metrics.json holds no fitness"
                result = replace(result, phase="Failed", message=message)
        else:
            detail = self.cluster.job_failure_message(pop.ref.namespace, view.name) or view.message
            result = replace(result, phase="Failed", message=clip(f"{view.reason or 'Failed'}: {detail}"))
        if not quiet:
            self._observe_job(pop, generation, view, result)
        return result

    def _observe_job(
        self, pop: _Population, generation: GenerationState, view: JobView, result: GenomeResult
    ) -> None:
        if view.duration is not None:
            labels = (pop.ref.namespace, pop.ref.name, result.phase)
            self.metrics.job_duration.labels(*labels).observe(view.duration)
        if result.phase == "Failed":
            message = f"{view.name} failed after {result.attempts} attempt(s): {result.message}"
            self.cluster.post_event(generation.ref, "Warning", "GenomeFailed", message)

    def _start(
        self, pop: _Population, plan_spec: PopulationSpec, generation: GenerationState, genome: str
    ) -> str:
        """Write the genome's task to S3 and create its Job (both idempotent)."""
        plan = next(p for p in generation.plans if p.id == genome)
        if generation.tasks_ready or generation.phase == "Breeding":  # the breeding step wrote it
            uri = task_uri(pop.store, plan_spec, pop.ref.name, plan)
        else:
            uri = write_task(pop.store, plan_spec, pop.ref.name, plan)
        request = JobRequest(
            owner=generation.ref,
            population=pop.ref.name,
            generation=generation.number,
            genome=genome,
            task_uri=uri,
            spec=pop.spec,
            command=self.settings.train_command,
            ttl_seconds=self.settings.job_ttl_seconds,
        )
        self.cluster.create_job(build_job(request, pop.access.endpoint, pop.access.region))
        with self._lock:
            self._created.setdefault((pop.ref.namespace, pop.ref.name), set()).add(genome)
        return genome

    # ----- the end of a generation ---------------------------------------------------------------
    def _older(self, pop: _Population) -> Callable[[Sequence[int]], list[GenerationSummary]]:
        def fetch(numbers: Sequence[int]) -> list[GenerationSummary]:
            rows = []
            for number in numbers:
                body = self.cluster.get_generation(pop.ref.namespace, generation_name(pop.ref.name, number))
                if body is None:
                    continue
                s = GenerationStatus.model_validate(body.get("status") or {})
                row = (s.best, s.mean, s.worst, s.diversity, s.best_genome, s.succeeded, s.failed)
                rows.append(GenerationSummary(number, *row))
            return rows

        return fetch

    def _conclude(self, pop: _Population, generation: GenerationState) -> _Population:
        summary = summarize(generation.number, generation.results, pop.maximize)
        best = None
        if summary.best_genome is not None:
            winner = generation.result(summary.best_genome)
            best = BestGenome(
                genome=winner.id,
                generation=generation.number,
                fitness=float(winner.fitness or 0.0),
                adapter=pop.location.uri(winner.adapter),
            )
        status = record_generation(pop.status, summary, best, pop.maximize)
        if status.completed_generations != pop.status.completed_generations:
            self.metrics.generations_completed.labels(pop.ref.namespace, pop.ref.name).inc()
        if status.best is not None:
            self.metrics.best_fitness.labels(pop.ref.namespace, pop.ref.name).set(status.best.fitness)
        if summary.mean is not None:
            self.metrics.mean_fitness.labels(pop.ref.namespace, pop.ref.name).set(summary.mean)
        verdict = decision(pop.spec, status, self._older(pop))
        if verdict.verdict == "continue":
            update = {
                "generation": generation.number + 1,
                "reason": verdict.reason,
                "message": verdict.message,
            }
            return self._save(pop, status.model_copy(update=update))
        if status.best is not None:
            self._export_best(pop, status.best)
        now = iso(self.clock.now())
        phase = "Succeeded" if verdict.verdict == "succeed" else "Failed"
        status = set_condition(status, "Completed", True, verdict.reason, verdict.message, now, pop.observed)
        update = {
            "phase": phase,
            "reason": verdict.reason,
            "message": verdict.message,
            "completion_time": now,
        }
        return self._save(pop, status.model_copy(update=update))

    def _export_best(self, pop: _Population, best: BestGenome) -> None:
        """Copy the best adapter (PEFT format) to ``<prefix>/<population>/best/`` with ``best.json``."""
        target = best_key(pop.spec.storage.prefix, pop.ref.name)
        source = pop.location.key(best.adapter)
        if source is None:
            return
        copy_prefix(pop.store, source, target)
        record = {**best.to_json_dict(), "population": pop.ref.name, "exported": pop.store.uri(target)}
        pop.store.write_bytes(f"{target}/best.json", json.dumps(record, indent=2, sort_keys=True).encode())
