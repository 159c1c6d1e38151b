"""Drive one ``Generation``: create (plan) it, breed its offspring, run its genomes as Jobs, record outcomes.

The Population pass (:mod:`nora.operator.reconciler`) calls :meth:`GenerationDriver.ensure` for the
current generation, then :meth:`~GenerationDriver.breed` and :meth:`~GenerationDriver.advance` until it
is finished. Every step is idempotent and re-derived from what exists: the Generation object (plans and
results), the Jobs in the operator's index, and the genomes' outputs in the store. Outcomes are read
through :mod:`nora.evolution.run_store` exactly as the local driver reads them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from nora.api.population import PopulationSpec
from nora.api.status import PopulationStatus
from nora.evolution import ledger, run_store
from nora.evolution.layout import genome_id
from nora.evolution.records import GenomePlan, GenomeResult
from nora.operator.breeder import Breeder, PlanRequest
from nora.operator.cluster import Cluster
from nora.operator.generations import GenerationObject, Location, spec_json
from nora.operator.job_steps import plan_step
from nora.operator.jobs import JobRequest, JobView, build_job
from nora.operator.metrics import Metrics
from nora.operator.objects import ObjectRef, build_generation, generation_name, owner_uid
from nora.operator.population_status import FAILED_CREATE, blocked_genomes
from nora.operator.retrain_step import ParentRepair
from nora.operator.settings import OperatorSettings
from nora.operator.storage import StorageAccess, task_uri, write_task
from nora.operator.template_check import template_problems
from nora.storage import Store

log = logging.getLogger("nora.operator")
BREEDING_CHUNK = 16
"""Offspring per breeding call (at least; at most 8 calls per generation)."""


def iso(seconds: float | None = None) -> str:
    """``seconds`` (default: now) as an RFC 3339 UTC timestamp."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if seconds is None else seconds))


@dataclass(frozen=True)
class PopulationContext:
    """One Population as a pass sees it: its spec, status and where its store is."""

    ref: ObjectRef
    spec: PopulationSpec
    spec_json: dict[str, Any]
    status: PopulationStatus
    observed: int | None
    access: StorageAccess
    store: Store
    location: Location


class GenerationDriver:
    """Creates, breeds and runs Generations (thread-safe across different Populations)."""

    def __init__(
        self, cluster: Cluster, breeder: Breeder, settings: OperatorSettings, metrics: Metrics
    ) -> None:
        self.cluster = cluster
        self.breeder = breeder
        self.settings = settings
        self.metrics = metrics
        self._created: dict[tuple[str, str], set[str]] = {}
        self._checked: dict[tuple[str, int | None], list[str]] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max(1, settings.api_workers), thread_name_prefix="nora-api")
        self.repair = ParentRepair(cluster, settings, self)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ----- the Generation object -----------------------------------------------------------------
    def load(self, pop: PopulationContext, number: int) -> GenerationObject | None:
        body = self.cluster.get_generation(pop.ref.namespace, generation_name(pop.ref.name, number))
        if body is None or owner_uid(body) != pop.ref.uid:
            return None
        return GenerationObject.from_body(body, pop.location)

    def previous(self, pop: PopulationContext, number: int) -> GenerationObject | None:
        if number == 0:
            return None
        previous = self.load(pop, number - 1)
        if previous is None or not previous.finished:
            raise RuntimeError(f"generation {number - 1} of {pop.ref.name} is missing or unfinished")
        return previous

    @staticmethod
    def _pairs(previous: GenerationObject | None) -> tuple[tuple[dict[str, Any], dict[str, Any]], ...]:
        if previous is None:
            return ()
        return tuple(
            (p.to_json_dict(), r.to_json_dict())
            for p, r in zip(previous.plans, previous.results, strict=True)
        )

    def _earlier(
        self, pop: PopulationContext, number: int, spec: dict[str, Any]
    ) -> tuple[tuple[tuple[dict[str, Any], dict[str, Any]], ...], ...]:
        """The generations before the previous one, for the CMA-ES strategies' replay (else none)."""
        if spec.get("strategy", {}).get("method", "genetic") == "genetic":
            return ()
        return tuple(self._pairs(self.previous(pop, g + 1)) for g in range(number - 1))

    def ensure(self, pop: PopulationContext) -> GenerationObject | None:
        """Generation ``status.generation``, created (planned) if missing; ``None`` if its name is taken."""
        number = pop.status.generation
        body = self.cluster.get_generation(pop.ref.namespace, generation_name(pop.ref.name, number))
        previous = None
        if body is None:
            previous = self.previous(pop, number)
            request = PlanRequest(
                pop.spec_json,
                pop.ref.name,
                number,
                self._pairs(previous),
                earlier=self._earlier(pop, number, pop.spec_json),
            )
            plans = [GenomePlan.model_validate(p) for p in self.breeder.run(request).plans]
            spec = spec_json(pop.ref.name, plans, pop.spec_json, pop.location)
            body = self.cluster.create_generation(build_generation(pop.ref, number, spec))
        if owner_uid(body) != pop.ref.uid:
            return None
        generation = GenerationObject.from_body(body, pop.location)
        if generation.phase is not None:
            return generation
        previous = previous or self.previous(pop, number)
        earlier = {r.id: r for r in previous.results} if previous else {}
        breeds = any(p.bred for p in generation.plans)
        generation = replace(
            generation.with_results(ledger.initial_results(generation.plans, earlier)),
            phase="Breeding" if breeds else "Running",
            start_time=iso(),
        )
        self.save(pop, generation, None)
        return generation

    def save(
        self, pop: PopulationContext, generation: GenerationObject, before: GenerationObject | None
    ) -> None:
        """Write the Generation's status (and its ledger file) when it changed; an Event on a new phase."""
        goal = pop.spec.fitness.goal
        status = generation.status_json(pop.location, goal)
        if before is not None and status == before.status_json(pop.location, goal):
            return
        self.cluster.patch_generation_status(pop.ref.namespace, generation.ref.name, status)
        run_store.write_generation(pop.store, pop.spec.storage.prefix, pop.ref.name, generation.record)
        self.metrics.set_genomes(pop.ref.namespace, pop.ref.name, generation.record.counts())
        if before is None or before.phase != generation.phase:
            kind = "Warning" if generation.phase == "Failed" else "Normal"
            message = f"generation {generation.number}: {generation.phase}"
            self.cluster.post_event(generation.ref, kind, str(generation.phase), message)

    def template_problems(self, pop: PopulationContext) -> list[str]:
        """What the apiserver refuses in this spec's genome Jobs (one dry-run per spec change)."""
        key = (pop.ref.uid, pop.observed)
        if key not in self._checked:
            number = pop.status.generation
            request = JobRequest(
                owner=pop.ref,
                population=pop.ref.name,
                generation=number,
                genome=genome_id(pop.ref.name, number, 0),
                task_uri=pop.location.uri("dry-run/genome.json") or "",
                spec=pop.spec,
                command=self.settings.train_command,
                ttl_seconds=self.settings.job_ttl_seconds,
            )
            access = pop.access
            self._checked[key] = template_problems(self.cluster, request, access.endpoint, access.region)
        return self._checked[key]

    # ----- breeding ------------------------------------------------------------------------------
    def breed(
        self, pop: PopulationContext, generation: GenerationObject, jobs: Mapping[str, JobView]
    ) -> GenerationObject:
        """Breed the offspring in chunks; each chunk's Jobs are created while the next one breeds (still
        ``Breeding`` while a parent whose adapter failed verification is re-trained)."""
        if generation.phase != "Breeding":
            return generation
        offspring = [p.id for p in generation.plans if p.bred]
        size = max(BREEDING_CHUNK, -(-len(offspring) // 8))
        chunks = [tuple(offspring[i : i + size]) for i in range(0, len(offspring), size)] or [()]
        previous = self.previous(pop, generation.number)
        if previous is not None and not self.repair.parents_ready(pop, generation.plans, previous, jobs):
            return generation  # never bred from an adapter that fails verification: re-trained first
        request = PlanRequest(
            spec=generation.planned_with,
            population=pop.ref.name,
            generation=generation.number,
            previous=self._pairs(previous),
            earlier=self._earlier(pop, generation.number, generation.planned_with),
            access=pop.access,
            workers=self.settings.breeding_workers,
            tasks=True,
        )
        began = time.monotonic()
        ready: set[str] = set()
        with ThreadPoolExecutor(1, thread_name_prefix="nora-breed") as runner:
            pending = runner.submit(self.breeder.run, replace(request, only=chunks[0]))
            for index in range(len(chunks)):
                result = pending.result()
                if index + 1 < len(chunks):
                    pending = runner.submit(self.breeder.run, replace(request, only=chunks[index + 1]))
                    ready.update(chunks[index])
                    generation = self.advance(pop, generation, jobs, pop.spec.parallelism, frozenset(ready))
        seconds = time.monotonic() - began  # the whole step: planning, transfer and breeding
        log.info(
            "%s/%s: bred %d offspring in %.2fs",
            pop.ref.namespace,
            generation.ref.name,
            len(offspring),
            seconds,
        )
        if tuple(p["id"] for p in result.plans) != tuple(p.id for p in generation.plans):
            raise RuntimeError(f"re-planning generation {generation.number} gave different genomes")
        self.metrics.breeding_duration.labels(pop.ref.namespace, pop.ref.name).observe(seconds)
        bred = replace(generation, phase="Running", breeding_seconds=round(seconds, 3), tasks_ready=True)
        self.save(pop, bred, generation)
        return bred

    # ----- genomes and Jobs ----------------------------------------------------------------------
    def _created_set(
        self, pop: PopulationContext, generation: GenerationObject, jobs: Mapping[str, JobView]
    ) -> set[str]:
        with self._lock:
            created = self._created.setdefault((pop.ref.namespace, pop.ref.name), set())
            prefix = f"{generation.ref.name}-"
            created -= {n for n in created if not n.startswith(prefix) or n in jobs}
            return set(created)

    def advance(
        self,
        pop: PopulationContext,
        generation: GenerationObject,
        jobs: Mapping[str, JobView],
        parallelism: int,
        ready: frozenset[str] | None = None,
    ) -> GenerationObject:
        """Record finished Jobs, start new ones (only ``ready`` genomes, when given: bred and tasked)."""
        before = generation
        plan_spec = PopulationSpec.model_validate(generation.planned_with)
        step = plan_step(generation, jobs, self._created_set(pop, generation, jobs), parallelism, ready)
        generation = step.generation
        for genome in step.vanished:
            generation = self._vanished(pop, plan_spec, generation, genome)
        current = generation
        outcomes = list(self._pool.map(lambda v: self._outcome(pop, plan_spec, current, v), step.finished))
        for result in outcomes:
            generation = generation.with_result(result)
        if step.vanished:
            step = plan_step(generation, jobs, self._created_set(pop, generation, jobs), parallelism, ready)
        current = generation
        started = list(self._pool.map(lambda g: self._start(pop, plan_spec, current, g), step.create))
        if started:
            log.info("%s/%s: started %d Jobs", pop.ref.namespace, generation.ref.name, len(started))
        for genome in started:
            generation = generation.with_result(generation.result(genome).update(phase="Pending"), job=genome)
        generation = self._blocked(pop, generation, jobs)
        if generation.finished and generation.phase == "Running":
            scored = any(r.scored for r in generation.results)
            generation = replace(generation, phase="Succeeded" if scored else "Failed", completion_time=iso())
        self.save(pop, generation, before)
        return generation

    def _blocked(
        self, pop: PopulationContext, generation: GenerationObject, jobs: Mapping[str, JobView]
    ) -> GenerationObject:
        """Genomes whose Pods cannot be created (missing PriorityClass, quota, admission): the reason in
        their status (cleared once their Pods exist) and a Warning Event on the Population, not a silent
        Pending."""
        waiting = {
            r.id
            for r in generation.results
            if r.phase == "Pending" and r.id in jobs and not jobs[r.id].attempts
        }
        for result in blocked_genomes(generation.results):
            if result.id not in waiting:
                generation = generation.with_result(result.update(message=""))
        if not waiting:
            return generation
        blocked = self.cluster.blocked_jobs(pop.ref.namespace)
        for genome in sorted(waiting & blocked.keys()):
            result = generation.result(genome)
            message = ledger.clip(f"{FAILED_CREATE}{blocked[genome]}")
            if result.message != message:
                generation = generation.with_result(result.update(message=message))
                self.cluster.post_event(pop.ref, "Warning", "FailedCreate", f"{genome}: {message}")
        return generation

    def _vanished(
        self, pop: PopulationContext, plan_spec: PopulationSpec, generation: GenerationObject, genome: str
    ) -> GenerationObject:
        """A Job that disappeared before its outcome was recorded: use its output, else run it again."""
        view = JobView(name=genome, generation=generation.number, owner=generation.ref.uid, phase="Succeeded")
        result = self._outcome(pop, plan_spec, generation, view, quiet=True)
        if result.phase == "Succeeded":
            return generation.with_result(result)
        jobs = {k: v for k, v in generation.jobs.items() if k != genome}
        return replace(generation, jobs=jobs)

    def _outcome(
        self,
        pop: PopulationContext,
        plan_spec: PopulationSpec,
        generation: GenerationObject,
        view: JobView,
        quiet: bool = False,
    ) -> GenomeResult:
        result = generation.result(view.name)
        result = result.update(attempts=max(result.attempts, view.attempts, 1))
        if view.phase == "Succeeded":
            plan = generation.record.plan(view.name)
            result = run_store.genome_outcome(pop.store, plan_spec.storage.prefix, pop.ref.name, plan, result)
        else:
            detail = self.cluster.job_failure_message(pop.ref.namespace, view.name) or view.message
            result = result.update(
                phase="Failed", message=ledger.clip(f"{view.reason or 'Failed'}: {detail}")
            )
        if not quiet:
            self._observe_job(pop, generation, view, result)
        return result

    def _observe_job(
        self, pop: PopulationContext, generation: GenerationObject, view: JobView, result: GenomeResult
    ) -> None:
        if view.duration is not None:
            labels = (pop.ref.namespace, pop.ref.name, result.phase)
            self.metrics.job_duration.labels(*labels).observe(view.duration)
        if result.phase == "Failed":
            message = f"{view.name} failed after {result.attempts} attempt(s): {result.message}"
            self.cluster.post_event(generation.ref, "Warning", "GenomeFailed", message)

    def _start(
        self, pop: PopulationContext, plan_spec: PopulationSpec, generation: GenerationObject, genome: str
    ) -> str:
        """Write the genome's task to S3 and create its Job (both idempotent)."""
        plan = generation.record.plan(genome)
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
