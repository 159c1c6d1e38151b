"""Reconcile one Population: a level-triggered pass that reads what exists and does the next thing.

The state lives in the cluster and the store, never in this process: ``Population.status`` (the
Population's record: current generation, history, best), the ``Generation`` objects (plans and
per-genome results), the Jobs (found by deterministic name in the operator's index) and the genomes'
outputs in S3. A pass:

1. validates the spec (problems: ``Ready=False`` with the reason, an Event, and nothing starts);
2. resumes a finished Population whose ``maxGenerations`` was raised;
3. has the :class:`~nora.operator.generation_driver.GenerationDriver` create Generation ``N``, breed it
   and run its Jobs;
4. when every genome of ``N`` has finished: records it with :mod:`nora.evolution.ledger` (history row,
   best, verdict, exactly as ``nora run`` does) and either moves to ``N + 1`` (same pass) or exports the
   best adapter with :mod:`nora.evolution.run_store` and ends with phase Succeeded or Failed;
5. with ``spec.dataset.test``, a Succeeded verdict first waits for the test-split Job
   (:mod:`nora.operator.heldout_step`); the score is recorded, then the run ends.

A crash anywhere repeats at most the step it was in: every write is idempotent and every decision is
re-derived from stored state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from nora.api.base import ApiValidationError
from nora.api.generation import GenerationStatus
from nora.api.manifest import parse_population
from nora.api.population import PopulationSpec
from nora.api.status import HistoryRow, PopulationStatus
from nora.evolution import heldout, ledger, retraining, run_store
from nora.operator.breeder import Breeder
from nora.operator.cluster import Cluster
from nora.operator.errors import backoff_seconds, error_kind, error_message, transient
from nora.operator.generation_driver import GenerationDriver, PopulationContext, iso
from nora.operator.generations import GenerationObject, Location
from nora.operator.heldout_step import held_out_step, records
from nora.operator.jobs import JobView
from nora.operator.metrics import Metrics
from nora.operator.model_cache_step import ensure_model_cache
from nora.operator.objects import ObjectRef, generation_name
from nora.operator.population_status import pods_creatable, set_condition, status_patch
from nora.operator.settings import OperatorSettings
from nora.operator.storage import Stores, namespaced
from nora.storage import StoreError

log = logging.getLogger("nora.operator")
FINAL = ("Succeeded", "Failed")
MAX_GENERATIONS_PER_PASS = 3
RETRAIN_POLL_SECONDS = 5.0


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


def _best_adapter(status: PopulationStatus, convert: Callable[[str | None], str | None]) -> PopulationStatus:
    """``status`` with its best genome's adapter converted (store key <-> ``s3://`` URI)."""
    if status.best is None:
        return status
    return status.model_copy(
        update={"best": status.best.model_copy(update={"adapter": convert(status.best.adapter)})}
    )


def cluster_problems(spec: PopulationSpec) -> list[str]:
    """What the operator cannot run that ``nora run`` could (the schema cannot tell)."""
    problems = []
    if not spec.storage.bucket:
        problems.append("spec.storage.bucket: required on a cluster (genome adapters live in S3)")
    uris = {
        "spec.baseModel.uri": spec.base_model.uri,
        "spec.dataset.train": spec.dataset.train,
        "spec.dataset.eval": spec.dataset.eval,
        **({"spec.dataset.test": spec.dataset.test} if spec.dataset.test else {}),
        **{f"spec.seedAdapters[{i}].uri": s.uri for i, s in enumerate(spec.seed_adapters)},
    }
    for path, uri in uris.items():
        if uri.startswith("toy://"):
            problems.append(f"{path}: toy:// URIs only work with `nora run`; use hf://, s3:// or file://")
    return problems


class Reconciler:
    """Runs passes over Populations (thread-safe across different Populations)."""

    def __init__(
        self,
        cluster: Cluster,
        stores: Stores,
        breeder: Breeder,
        settings: OperatorSettings,
        metrics: Metrics,
    ) -> None:
        self.cluster = cluster
        self.stores = stores
        self.settings = settings
        self.metrics = metrics
        self.generations = GenerationDriver(cluster, breeder, settings, metrics)
        self._erroring: set[PopulationRef] = set()  # Populations whose Ready condition says ReconcileError
        self._failures: dict[PopulationRef, int] = {}  # failed passes in a row (the back-off)
        self._reported: dict[PopulationRef, str] = {}  # the kind of error last reported on each
        self._logged: set[str] = set()  # error kinds whose traceback was logged once

    def close(self) -> None:
        self.generations.close()

    # ----- the pass ------------------------------------------------------------------------------
    def reconcile(self, ref: PopulationRef, jobs: Mapping[str, JobView]) -> PassResult:
        """One pass over ``ref``; errors are counted, reported on the object, and retried later."""
        began = time.monotonic()
        try:
            result = self._pass(ref, jobs)
            self._failures.pop(ref, None)
            if ref in self._erroring:
                self._clear_error(ref)
            return result
        except Exception as error:
            self.metrics.reconcile_errors.labels(ref.namespace, ref.name, type(error).__name__).inc()
            failures = self._failures.get(ref, 0) + 1
            self._failures[ref] = failures
            self._log_error(ref, error)
            self._report_error(ref, error)
            return PassResult(delay=backoff_seconds(failures), backoff=True)
        finally:
            self.metrics.reconcile_duration.observe(time.monotonic() - began)

    def _pass(self, ref: PopulationRef, jobs: Mapping[str, JobView]) -> PassResult:
        body = self.cluster.get_population(ref.namespace, ref.name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return PassResult()
        pop = self._accept(body)
        if pop is None:
            return PassResult()
        problems = [] if pop.status.phase in FINAL else self.generations.template_problems(pop)
        if problems:
            self._reject(pop.ref, pop.status, problems, pop.observed)
            return PassResult()
        self._observe(pop.ref, pop.status)
        if _reconcile_error(pop.status):
            self._erroring.add(ref)
        again = ledger.resumed(pop.status, pop.spec)
        if again is not None:
            pop = self._save(pop, again.model_copy(update={"completion_time": None}))
        if pop.status.phase in FINAL:
            return PassResult()
        ready = self._model_cache(self._ensure_phase(pop), jobs)
        return PassResult() if ready is None else self._evolve(ready, jobs)

    def _evolve(self, pop: PopulationContext, jobs: Mapping[str, JobView]) -> PassResult:
        """Run generations: ensure, breed, advance, conclude (at most a few per pass)."""
        for _ in range(MAX_GENERATIONS_PER_PASS):
            pop = self._ensure_phase(pop)
            if heldout.awaiting_test(pop.status):
                self._score_test(pop, jobs)
                return PassResult()
            generation = self.generations.ensure(pop)
            if generation is None:
                return PassResult(delay=2.0)
            if pop.spec.suspend:
                self.generations.advance(pop, generation, jobs, parallelism=0)
                return PassResult()
            try:
                generation = self.generations.breed(pop, generation, jobs)
            except run_store.CorruptAdapterError as error:
                self._fail(pop, retraining.CORRUPT_ADAPTER, f"{error}; not bred from it")
                return PassResult()
            if generation.phase == "Breeding":  # a parent is being re-trained
                return PassResult(delay=RETRAIN_POLL_SECONDS)
            generation = self.generations.advance(pop, generation, jobs, pop.spec.parallelism)
            pop = self._save(pop, pods_creatable(pop.status, generation.results, iso(), pop.observed))
            if not generation.finished:
                return PassResult()
            pop = self._conclude(pop, generation)
            if pop.status.phase in FINAL:
                return PassResult()
        return PassResult(delay=0.0)

    def _model_cache(self, pop: PopulationContext, jobs: Mapping[str, JobView]) -> PopulationContext | None:
        """``pop`` once its model cache is ready (or it has none); else ``None`` (fetching, or failed)."""
        if pop.spec.model_cache is None:
            return pop
        step = ensure_model_cache(self.cluster, pop, jobs)
        ready = step.state == "Ready"
        status = set_condition(
            pop.status, "ModelCacheReady", ready, step.state, step.message, iso(), pop.observed
        )
        if step.state == "Failed":
            self._fail(replace(pop, status=status), "ModelCacheFailed", step.message)
            return None
        pop = self._save(pop, status)
        return pop if ready else None

    def _clear_error(self, ref: PopulationRef) -> None:
        """After a good pass, turn a ``Ready=False/ReconcileError`` condition back to ``Ready=True``."""
        self._erroring.discard(ref)
        self._reported.pop(ref, None)
        body = self.cluster.get_population(ref.namespace, ref.name)
        status = PopulationStatus.model_validate((body or {}).get("status") or {})
        if body is None or body["metadata"].get("deletionTimestamp") or not _reconcile_error(status):
            return
        ready = set_condition(status, "Ready", True, "Accepted", "the spec is valid", iso())
        self.cluster.patch_population_status(ref.namespace, ref.name, status_patch(ready))

    def _log_error(self, ref: PopulationRef, error: Exception) -> None:
        """One line per failed pass; a traceback only for an unexpected error, once per kind."""
        kind = error_kind(error)
        if transient(error) or kind in self._logged:
            message = ledger.clip(error_message(error))
            log.warning("reconciling %s/%s failed: %s", ref.namespace, ref.name, message)
            return
        self._logged.add(kind)
        log.exception("reconciling %s/%s failed", ref.namespace, ref.name)

    def _report_error(self, ref: PopulationRef, error: Exception) -> None:
        """``Ready=False/ReconcileError`` and an Event, once per kind of error (not per wording)."""
        kind = error_kind(error)
        try:
            body = self.cluster.get_population(ref.namespace, ref.name)
            if body is None:
                return
            status = PopulationStatus.model_validate(body.get("status") or {})
            if self._reported.get(ref) == kind and _reconcile_error(status):
                return
            message = ledger.clip(error_message(error))
            status = set_condition(status, "Ready", False, "ReconcileError", message, iso())
            self.cluster.patch_population_status(ref.namespace, ref.name, status_patch(status))
            self.cluster.post_event(ObjectRef.of(body), "Warning", "ReconcileError", message)
            self._reported[ref] = kind
        except Exception:
            log.warning("could not report the error on %s/%s", ref.namespace, ref.name)

    # ----- acceptance and phases -----------------------------------------------------------------
    def _accept(self, body: dict[str, Any]) -> PopulationContext | None:
        ref = ObjectRef.of(body)
        status = PopulationStatus.model_validate(body.get("status") or {})
        observed = body["metadata"].get("generation")
        try:
            spec = namespaced(parse_population(body).spec, ref.namespace)
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
        return PopulationContext(
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
        now = iso()
        new = set_condition(status, "Ready", False, reason, message, now, observed)
        if status.phase not in FINAL:
            new = new.model_copy(
                update={"phase": "Pending", "reason": reason, "message": ledger.clip(message, 4096)}
            )
        new = new.model_copy(update={"observed_generation": observed})
        self._observe(ref, new)
        if status_patch(new) == status_patch(status):
            return
        self.cluster.patch_population_status(ref.namespace, ref.name, status_patch(new))
        self.cluster.post_event(ref, "Warning", reason, message)

    def _save(self, pop: PopulationContext, status: PopulationStatus) -> PopulationContext:
        """Write ``status`` if it changed; an Event when the phase changed."""
        if status_patch(status) == status_patch(pop.status):
            return pop
        self.cluster.patch_population_status(pop.ref.namespace, pop.ref.name, status_patch(status))
        self._observe(pop.ref, status)
        if status.phase != pop.status.phase:
            kind = "Warning" if status.phase == "Failed" else "Normal"
            self.cluster.post_event(pop.ref, kind, status.phase, status.message or status.phase)
        return replace(pop, status=status)

    def _fail(self, pop: PopulationContext, reason: str, message: str) -> PopulationContext:
        """End the run as Failed for ``reason`` (a condition, and an Event by :meth:`_save`)."""
        now, message = iso(), ledger.clip(message, 4096)
        status = pop.status.model_copy(
            update={"phase": "Failed", "reason": reason, "message": message, "completion_time": now}
        )
        return self._save(pop, set_condition(status, "Completed", True, reason, message, now, pop.observed))

    def _observe(self, ref: ObjectRef, status: PopulationStatus) -> None:
        self.metrics.set_population(ref.namespace, ref.name, status.phase, status.generation)

    def _ensure_phase(self, pop: PopulationContext) -> PopulationContext:
        now = iso()
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

    # ----- the end of a generation ---------------------------------------------------------------
    def _older(self, pop: PopulationContext) -> Callable[[Sequence[int]], list[HistoryRow]]:
        def fetch(numbers: Sequence[int]) -> list[HistoryRow]:
            rows = []
            for number in numbers:
                body = self.cluster.get_generation(pop.ref.namespace, generation_name(pop.ref.name, number))
                if body is not None:
                    status = GenerationStatus.model_validate(body.get("status") or {})
                    fields = status.model_dump(include=set(HistoryRow.model_fields))
                    rows.append(HistoryRow(**fields, generation=number))
            return rows

        return fetch

    def _conclude(self, pop: PopulationContext, generation: GenerationObject) -> PopulationContext:
        """Record a finished generation (as ``nora run`` does) and go on to the next one, or end.

        The ledger works with store keys (as in the store's ``population.json``); the status shows the best
        adapter as a URI.
        """
        record = _best_adapter(pop.status, pop.location.key)
        record, row = ledger.record_generation(record, generation.record, pop.spec)
        decided = ledger.decision(pop.spec, record, self._older(pop))
        record = heldout.hold_for_test(pop.spec, ledger.conclude(record, decided, generation.number))
        status = self._settle(pop, record)
        self._observe_generation(pop, status, row)
        return self._save(pop, status)

    def _settle(self, pop: PopulationContext, record: PopulationStatus) -> PopulationStatus:
        """``record`` (adapters as store keys) written to the store, exported and Completed when it has
        ended; the status to save (adapters as URIs)."""
        if record.phase in FINAL:
            record = run_store.export_or_fail(pop.store, pop.spec.storage.prefix, pop.ref.name, record)
            now = iso()
            reason, message = record.reason, record.message
            record = set_condition(record, "Completed", True, reason, message, now, pop.observed)
            record = record.model_copy(update={"completion_time": now})
        run_store.write_population(pop.store, pop.spec.storage.prefix, pop.ref.name, record)
        return _best_adapter(record, pop.location.uri)

    def _score_test(self, pop: PopulationContext, jobs: Mapping[str, JobView]) -> None:
        """The test-split step (:mod:`nora.operator.heldout_step`); the run concludes once it is scored."""
        record = _best_adapter(pop.status, pop.location.key)
        load = self.generations.load
        score = held_out_step(self.cluster, pop, record, jobs, self.settings, lambda: records(load, pop))
        if score is None:
            return
        if score.phase == "Failed":
            self.cluster.post_event(pop.ref, "Warning", "TestScoreFailed", score.message)
        self._save(pop, self._settle(pop, heldout.finish(pop.spec, record, score, self._older(pop))))

    def _observe_generation(self, pop: PopulationContext, status: PopulationStatus, row: HistoryRow) -> None:
        if status.completed_generations != pop.status.completed_generations:
            self.metrics.generations_completed.labels(pop.ref.namespace, pop.ref.name).inc()
        if status.best is not None:
            self.metrics.best_fitness.labels(pop.ref.namespace, pop.ref.name).set(status.best.fitness)
        if row.mean is not None:
            self.metrics.mean_fitness.labels(pop.ref.namespace, pop.ref.name).set(row.mean)
