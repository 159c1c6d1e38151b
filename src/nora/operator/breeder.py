"""Planning and breeding, off the event loop and out of the operator's process.

The engine's planning and breeding need torch and the genetics library (hundreds of MiB resident);
the operator process itself never imports them. :class:`ProcessBreeder` runs :func:`plan_and_breed` in
one long-lived child process (spawned, so it shares nothing with kopf's threads) that plans a
generation and, when asked, breeds its offspring into S3 with a few threads (breeding orders are
independent and idempotent). Requests and results are plain data: JSON dicts and frozen dataclasses.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from nora.operator.storage import StorageAccess, write_task
from nora.storage import Store

JSON = dict[str, Any]


@dataclass(frozen=True)
class PlanRequest:
    """Plan generation ``generation`` of ``population`` and, with ``access``, breed its offspring.

    Attributes:
        spec: the Population spec (JSON) to plan with.
        population: its name.
        generation: the generation number.
        previous: the previous generation's ``(GenomePlan, GenomeResult)`` pairs as JSON dicts.
        access: where to breed into; ``None`` to plan only.
        workers: breeding threads.
        tasks: also write every trained genome's ``genome.json`` (alongside breeding, so the Jobs can
            be created the moment breeding ends).
        only: breed (and write tasks for) only these genomes; ``None``: all of them.
    """

    spec: JSON
    population: str
    generation: int
    previous: tuple[tuple[JSON, JSON], ...] = ()
    access: StorageAccess | None = None
    workers: int = 2
    tasks: bool = False
    only: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PlanResult:
    """The generation's genomes (``GenomePlan.to_json_dict()``)."""

    plans: tuple[JSON, ...]


_PLANS: dict[str, Any] = {}
"""The breeding process's last plans (a generation is bred in chunks; each chunk re-uses its plan)."""


def _plan(request: PlanRequest) -> Any:
    from nora.api.population import PopulationSpec
    from nora.evolution.planning import plan_initial, plan_next
    from nora.evolution.records import GenomePlan, GenomeResult

    key = hashlib.sha256(
        json.dumps(
            [request.spec, request.population, request.generation, request.previous], sort_keys=True
        ).encode()
    ).hexdigest()
    if key not in _PLANS:
        spec = PopulationSpec.model_validate(request.spec)
        if request.generation == 0:
            plan = plan_initial(spec, request.population)
        else:
            previous = [
                (GenomePlan.model_validate(p), GenomeResult.model_validate(r)) for p, r in request.previous
            ]
            plan = plan_next(spec, request.population, request.generation, previous)
        _PLANS.clear()
        _PLANS[key] = (spec, plan)
    return _PLANS[key]


def plan_and_breed(request: PlanRequest, store: Store | None = None) -> PlanResult:
    """Plan (and breed) one generation; runs in the breeding process (imports torch).

    ``store`` replaces the S3 store of ``request.access`` (tests breed into a local folder).
    """
    from nora.evolution import breeding

    spec, plan = _plan(request)
    plans = tuple(genome.to_json_dict() for genome in plan.genomes)
    if request.access is None or not plan.breeding:
        return PlanResult(plans=plans)
    target = store or request.access.store()
    chosen = set(request.only) if request.only is not None else {g.id for g in plan.genomes}
    orders = [order for order in plan.breeding if order.child in chosen]
    trained = [g for g in plan.genomes if g.train and g.id in chosen] if request.tasks else []
    with ThreadPoolExecutor(max(1, request.workers), thread_name_prefix="breed") as pool:
        bred = [pool.submit(breeding.execute, order, target) for order in orders]
        with ThreadPoolExecutor(4, thread_name_prefix="task") as writers:
            list(writers.map(lambda g: write_task(target, spec, request.population, g), trained))
        for future in bred:
            future.result()
    return PlanResult(plans=plans)


def die_with_parent(interval: float = 1.0) -> None:
    """Make the breeding process exit soon after the operator dies, so a killed operator leaves nothing.

    It runs in the breeding process (the pool's initializer) and watches its parent's pid from a daemon
    thread. ``PR_SET_PDEATHSIG`` would not do: it fires when the *thread* that spawned the process exits,
    and the operator spawns it from short-lived worker threads.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


class Breeder(Protocol):
    """Runs :func:`plan_and_breed` somewhere (the seam tests replace with :class:`InlineBreeder`)."""

    def run(self, request: PlanRequest) -> PlanResult: ...

    def close(self) -> None: ...


class InlineBreeder:
    """Runs in the calling thread (tests), breeding into ``store`` when given."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store

    def run(self, request: PlanRequest) -> PlanResult:
        return plan_and_breed(request, self.store)

    def close(self) -> None:
        return None


class ProcessBreeder:
    """Runs in one spawned child process, started on first use and restarted if it dies."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=die_with_parent,
                )
            return self._pool

    def run(self, request: PlanRequest) -> PlanResult:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self._executor().submit(plan_and_breed, request).result()
        except BrokenProcessPool:
            with self._lock:
                self._pool = None
            raise

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
