"""Repairing a corrupted parent on a cluster: the operator's adaptation of :mod:`nora.evolution.retraining`.

Before generation N is bred, every parent adapter is verified against its manifest. When one fails, the
genome that trained it is trained again by a Job ``<genome>-r<k>``, owned by (and labelled with) that
genome's own Generation and running its own task. The genome's status records the Job, ``retrains`` and
the reason (naming the object), and the Population gets a Warning Event ``Retraining``. Breeding waits
while the Job runs and then verifies again; a genome that cannot be repaired ends the run as
``CorruptAdapter``. The Job is created before the status is written, so a restart in between finds it
(creating it again is a no-op) instead of counting a second re-training.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from nora.api.population import PopulationSpec
from nora.evolution import retraining, run_store
from nora.evolution.layout import adapter_owner, job_name
from nora.evolution.ledger import clip
from nora.evolution.records import GenomePlan
from nora.operator.cluster import Cluster
from nora.operator.generations import GenerationObject
from nora.operator.jobs import JobRequest, JobView, build_job
from nora.operator.settings import OperatorSettings
from nora.operator.storage import task_uri

if TYPE_CHECKING:
    from nora.operator.generation_driver import PopulationContext

log = logging.getLogger("nora.operator")


class Generations(Protocol):
    """Where the Generation objects are read and written (the generation driver)."""

    def load(self, pop: PopulationContext, number: int) -> GenerationObject | None: ...

    def save(
        self, pop: PopulationContext, generation: GenerationObject, before: GenerationObject | None
    ) -> None: ...


class ParentRepair:
    """Verifies parents before breeding and re-trains a corrupted one (thread-safe across Populations)."""

    def __init__(self, cluster: Cluster, settings: OperatorSettings, generations: Generations) -> None:
        self.cluster = cluster
        self.settings = settings
        self.generations = generations
        self._created: set[tuple[str, str]] = set()  # re-training Jobs created, not yet in the index
        self._lock = threading.Lock()

    def parents_ready(
        self,
        pop: PopulationContext,
        plans: Sequence[GenomePlan],
        previous: GenerationObject,
        jobs: Mapping[str, JobView],
    ) -> bool:
        """Whether every adapter the bred ``plans`` start from verifies; if not, the re-training of its
        genome is started or awaited.

        Raises:
            CorruptAdapterError: naming the genome and the object, when it cannot be re-trained.
        """
        try:
            run_store.verify_parents(pop.store, plans, previous.results)
            return True
        except run_store.CorruptAdapterError as error:
            corrupt = error
        owner = adapter_owner(pop.spec.storage.prefix, pop.ref.name, corrupt.key)
        generation = None if owner is None else self._generation(pop, previous, owner[0])
        if owner is None or generation is None:
            raise retraining.unrepairable(corrupt, retraining.NOT_OWN)
        result, plan = generation.result(owner[1]), generation.record.plan(owner[1])
        if result.retrains and self._retraining(pop, job_name(plan.id, result.retrains), jobs, corrupt):
            return False
        retrain = retraining.retrain_or_fail(
            corrupt, owner, result.retrains, retraining.start_problem(pop.store, plan)
        )
        self._start(pop, generation, plan, retrain)
        return False

    def _generation(
        self, pop: PopulationContext, previous: GenerationObject, number: int
    ) -> GenerationObject | None:
        return previous if number == previous.number else self.generations.load(pop, number)

    def _retraining(
        self,
        pop: PopulationContext,
        name: str,
        jobs: Mapping[str, JobView],
        corrupt: run_store.CorruptAdapterError,
    ) -> bool:
        """Whether the re-training Job ``name`` is still under way.

        Raises:
            CorruptAdapterError: when that Job failed.
        """
        view = jobs.get(name)
        with self._lock:
            self._created -= {(pop.ref.namespace, n) for n in jobs}
            if (pop.ref.namespace, name) in self._created:
                return True
        if view is not None and view.phase == "Failed":
            detail = self.cluster.job_failure_message(pop.ref.namespace, name) or view.message
            message = f"{corrupt.detail}; re-training it (Job {name}) failed: {detail}"
            raise run_store.CorruptAdapterError(corrupt.genome, message, corrupt.key)
        return view is not None and not view.finished_phase

    def _start(
        self,
        pop: PopulationContext,
        generation: GenerationObject,
        plan: GenomePlan,
        retrain: retraining.Retrain,
    ) -> None:
        name = job_name(plan.id, retrain.attempt)
        plan_spec = PopulationSpec.model_validate(generation.planned_with)
        request = JobRequest(
            owner=generation.ref,
            population=pop.ref.name,
            generation=generation.number,
            genome=plan.id,
            task_uri=task_uri(pop.store, plan_spec, pop.ref.name, plan),
            spec=pop.spec,
            command=self.settings.train_command,
            ttl_seconds=self.settings.job_ttl_seconds,
            name=name,
        )
        self.cluster.create_job(build_job(request, pop.access.endpoint, pop.access.region))
        with self._lock:
            self._created.add((pop.ref.namespace, name))
        result = generation.result(plan.id).update(retrains=retrain.attempt, message=clip(retrain.reason))
        self.generations.save(pop, generation.with_result(result, job=name), generation)
        self.cluster.post_event(pop.ref, "Warning", "Retraining", f"genome {plan.id}: {retrain.reason}")
        log.info("%s/%s: re-training genome %s as Job %s", pop.ref.namespace, pop.ref.name, plan.id, name)
