"""One step of a generation's genomes, decided from what exists (pure).

Inputs: the Generation's recorded results, the Jobs the operator owns (from its index), the Jobs it
created moments ago that the index has not shown yet, and the parallelism. Output: the results updated
from running Jobs, the finished Jobs whose outcome must be read, the genomes whose Job vanished before
its outcome was recorded, and the genomes to start now (in index order, never more than the free
parallelism). Deterministic names make this safe across restarts: a Job that exists is never created
again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from nora.operator.generations import GenerationObject
from nora.operator.jobs import JobView


@dataclass(frozen=True)
class Step:
    """What to do for one generation now (see the module docstring)."""

    generation: GenerationObject
    finished: tuple[JobView, ...]
    vanished: tuple[str, ...]
    create: tuple[str, ...]
    active: int


def own_jobs(
    jobs: Mapping[str, JobView], generation: GenerationObject
) -> tuple[dict[str, JobView], set[str]]:
    """This generation's Jobs, and the names taken by Jobs of another owner (an earlier incarnation of a
    Population of the same name, still being garbage-collected)."""
    own: dict[str, JobView] = {}
    taken: set[str] = set()
    for name, view in jobs.items():
        if view.generation != generation.number:
            continue
        if view.owner == generation.ref.uid:
            own[name] = view
        else:
            taken.add(name)
    return own, taken


def plan_step(
    generation: GenerationObject,
    jobs: Mapping[str, JobView],
    created: Collection[str],
    parallelism: int,
    ready: Collection[str] | None = None,
) -> Step:
    """The next step of ``generation`` (see the module docstring); with ``ready``, only those genomes
    may start (the rest are still being bred)."""
    own, taken = own_jobs(jobs, generation)
    state = generation
    finished: list[JobView] = []
    vanished: list[str] = []
    waiting: list[str] = []
    active = 0
    for plan, result in zip(generation.plans, generation.results, strict=True):
        if result.finished or not plan.train:
            continue
        view = own.get(plan.id)
        if view is not None and view.finished_phase:
            finished.append(view)
        elif view is not None:
            active += 1
            attempts = max(result.attempts, view.attempts)
            if (result.phase, result.attempts) != (view.phase, attempts):
                state = state.with_result(result.update(phase=view.phase, attempts=attempts), job=view.name)
        elif plan.id in created:
            active += 1
        elif plan.id in taken:
            continue
        elif generation.jobs.get(plan.id):
            vanished.append(plan.id)
        elif ready is None or plan.id in ready:
            waiting.append(plan.id)
    slots = max(0, parallelism - active)
    return Step(state, tuple(finished), tuple(vanished), tuple(waiting[:slots]), active)
