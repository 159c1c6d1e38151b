"""The test-split step of a Population pass: one ``nora test-score`` Job once the evolution has ended.

With ``spec.dataset.test``, a run whose verdict is Succeeded stays Running (reason ``TestScoring``, see
:mod:`nora.evolution.heldout`) while this step:

1. writes the scoring task (``test/g<N>/task.json``: what :func:`~nora.evolution.heldout.plan_task`
   chose from the Generations) and creates the Job ``<population>-test-g<N>``, built by the genome Job
   builder (same image, restricted security context, Secret env, ``podFailurePolicy``, Kueue labels),
   owned by the Population and running the operator's ``NORA_TEST_SCORE_COMMAND``;
2. waits for it through the operator's index of Jobs (a Job event wakes the Population);
3. reads its ``test.json`` into a :class:`~nora.api.status.HeldOutScore`, or a Failed one with the Job's
   failure message, which the reconciler records before it concludes the run.

Creating is idempotent (a 409 is "already there"), and a ``test.json`` whose Job is gone (deleted after
``ttlSecondsAfterFinished`` before a pass saw it finish) is read, not scored again. The name carries the
generation, so a run resumed by a raised ``maxGenerations`` scores again under a new name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from nora.api.status import HeldOutScore, PopulationRecord
from nora.api.task import HELD_OUT_RESULT_FILE
from nora.evolution import heldout
from nora.evolution.ledger import GenerationRecord
from nora.operator.cluster import Cluster
from nora.operator.generation_driver import PopulationContext
from nora.operator.generations import GenerationObject
from nora.operator.jobs import JobRequest, JobView, build_job
from nora.operator.settings import OperatorSettings

COMPONENT = "test-score"


def records(
    load: Callable[[PopulationContext, int], GenerationObject | None], pop: PopulationContext
) -> list[GenerationRecord]:
    """Every finished generation's record, in order, from its Generation object."""
    found = []
    for number in range(pop.status.completed_generations):
        generation = load(pop, number)
        if generation is None:
            raise RuntimeError(f"generation {number} of {pop.ref.name} is missing")
        found.append(generation.record)
    return found


def held_out_job_name(population: str, generation: int) -> str:
    """The test-score Job's name after generation ``generation``."""
    return f"{population}-test-g{generation}"


def _create(
    cluster: Cluster,
    pop: PopulationContext,
    record: PopulationRecord,
    settings: OperatorSettings,
    generations: Sequence[GenerationRecord],
) -> None:
    task = heldout.plan_task(pop.spec, pop.ref.name, record, generations, pop.store.uri)
    key = heldout.write_task(pop.store, pop.spec, pop.ref.name, task)
    request = JobRequest(
        owner=pop.ref,
        population=pop.ref.name,
        generation=record.generation,
        genome=held_out_job_name(pop.ref.name, record.generation),
        task_uri=pop.store.uri(key),
        spec=pop.spec,
        command=settings.test_score_command,
        ttl_seconds=settings.job_ttl_seconds,
        component=COMPONENT,
    )
    cluster.create_job(build_job(request, pop.access.endpoint, pop.access.region))


def held_out_step(
    cluster: Cluster,
    pop: PopulationContext,
    record: PopulationRecord,
    jobs: Mapping[str, JobView],
    settings: OperatorSettings,
    generations: Callable[[], Sequence[GenerationRecord]],
) -> HeldOutScore | None:
    """The run's test-split score once its Job has finished; ``None`` while it is created or runs.

    ``record`` names adapters by store key; ``generations`` loads every generation's record (only when
    the Job is to be created).
    """
    name = held_out_job_name(pop.ref.name, record.generation)
    view = jobs.get(name)
    if view is None or view.owner != pop.ref.uid:
        result = f"{heldout.task_folder(pop.spec, pop.ref.name, record)}/{HELD_OUT_RESULT_FILE}"
        if pop.store.exists(result):  # its Job finished and was deleted before this pass saw it
            return heldout.read_outcome(pop.store, pop.spec, pop.ref.name, record)
        _create(cluster, pop, record, settings, generations())
        return None
    if view.phase == "Succeeded":
        return heldout.read_outcome(pop.store, pop.spec, pop.ref.name, record)
    if view.phase == "Failed":
        detail = cluster.job_failure_message(pop.ref.namespace, name) or view.message
        return heldout.failed_score(pop.spec, record, f"Job {name}: {view.reason or 'Failed'}: {detail}")
    return None
