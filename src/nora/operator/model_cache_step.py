"""The model-cache step of a Population pass: fetch the base model once before any genome Job runs.

With ``spec.modelCache`` the pass first makes sure the cache PVC (when the operator owns it) and the
model-initializer Job exist (:mod:`nora.operator.model_cache` builds both), then waits for that Job: genome
Jobs start only once it succeeded; if it failed, the Population fails with its reason. Without a model
cache the step is always ready. Creating is idempotent (a 409 is "already there"), and the Job's state
comes from the operator's index of the Jobs it owns, like the genome Jobs'.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from nora.operator.cluster import Cluster
from nora.operator.generation_driver import PopulationContext
from nora.operator.jobs import JobView
from nora.operator.model_cache import build_model_initializer_job, build_model_pvc, initializer_job_name

CacheState = Literal["Ready", "Fetching", "Failed"]


@dataclass(frozen=True)
class CacheStep:
    """Where the model cache stands, and a sentence for the condition."""

    state: CacheState
    message: str


def ensure_model_cache(cluster: Cluster, pop: PopulationContext, jobs: Mapping[str, JobView]) -> CacheStep:
    """Create what is missing and report whether genome Jobs may start."""
    cache = pop.spec.model_cache
    if cache is None:
        return CacheStep("Ready", "no model cache")
    name = initializer_job_name(pop.ref.name)
    view = jobs.get(name)
    if view is None or view.owner != pop.ref.uid:
        claim = build_model_pvc(pop.ref, pop.spec)
        if claim is not None:
            cluster.create_pvc(claim)
        job = build_model_initializer_job(
            pop.ref, pop.spec, endpoint=pop.access.endpoint, region=pop.access.region
        )
        if job is not None:
            cluster.create_job(job)
        return CacheStep("Fetching", f"Job {name} fetches {pop.spec.base_model.uri} into the model cache")
    if view.phase == "Succeeded":
        return CacheStep("Ready", f"{pop.spec.base_model.uri} is in the model cache")
    if view.phase == "Failed":
        detail = cluster.job_failure_message(pop.ref.namespace, name) or view.message or view.reason
        return CacheStep("Failed", f"Job {name} could not fetch {pop.spec.base_model.uri}: {detail}")
    return CacheStep("Fetching", f"Job {name} fetches {pop.spec.base_model.uri} into the model cache")
