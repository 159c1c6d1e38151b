"""Re-training a genome whose stored adapter failed verification: the one decision both drivers take.

Before anything is bred from a finished genome, its adapter is checked against its ``nora_manifest.json``
(:func:`~nora.evolution.run_store.verify_parents`). When that fails, the genome that trained the adapter
is trained again from its own task: the same seed, hyperparameters and starting adapter, so it reproduces
the same adapter, and its recorded fitness stands. That is possible at most :data:`RETRAIN_LIMIT` times
per genome, and only for a genome's own trained output whose starting adapter still verifies; otherwise
the run fails, naming the genome and the object. The drivers only adapt this: the operator runs the
re-training as a Job ``<genome>-r<k>`` recorded in the genome's status, ``nora run`` as a local attempt.
"""

from __future__ import annotations

from dataclasses import dataclass

from nora.evolution.records import GenomePlan
from nora.evolution.run_store import CorruptAdapterError, verify_adapter
from nora.evolution.strategies.points import POINT_FILE
from nora.storage import Store, StoreError

CORRUPT_ADAPTER = "CorruptAdapter"
"""The reason of a run that ended on an adapter it could not repair (nothing is exported then)."""
RETRAIN_LIMIT = 1
"""Re-trainings per genome: a second corruption of the same genome ends the run."""


@dataclass(frozen=True)
class Retrain:
    """Train ``genome`` of ``generation`` again, its ``attempt``-th re-training, because of ``reason``."""

    generation: int
    genome: str
    attempt: int
    reason: str


def start_problem(store: Store, plan: GenomePlan) -> str | None:
    """Why ``plan``'s starting adapter cannot be trusted; ``None`` when it can, or is not one the run bred
    (a fresh LoRA, a user's seed adapter, a CMA-ES point record)."""
    if not plan.bred or plan.adapter is None or store.exists(f"{plan.adapter}/{POINT_FILE}"):
        return None
    try:
        verify_adapter(store, plan.adapter)
    except StoreError as error:
        return str(error)
    return None


def unrepairable(error: CorruptAdapterError, why: str) -> CorruptAdapterError:
    """The error that ends the run: the genome and object of ``error``, and ``why`` it was not repaired."""
    return CorruptAdapterError(error.genome, f"{error.detail}; {why}", error.key)


NOT_OWN = "not a genome's own trained adapter, so it cannot be trained again"


def retrain_or_fail(
    error: CorruptAdapterError,
    owner: tuple[int, str] | None,
    retrains: int,
    start: str | None,
    limit: int = RETRAIN_LIMIT,
) -> Retrain:
    """The re-training that repairs the adapter of ``error``.

    Args:
        error: the failed verification.
        owner: the generation and genome that trained that adapter (``None``: none did).
        retrains: how often that genome was re-trained already.
        start: :func:`start_problem` of that genome.
        limit: the most re-trainings per genome.

    Raises:
        CorruptAdapterError: naming the genome and the object, and why it cannot be re-trained.
    """
    if owner is None:
        why = NOT_OWN
    elif start is not None:
        why = f"not re-trained: its start adapter is corrupt too: {start}"
    elif retrains >= limit:
        why = f"re-trained {retrains} time(s) already, the limit"
    else:
        reason = f"re-training (attempt {retrains + 1}): {error.detail}"
        return Retrain(generation=owner[0], genome=owner[1], attempt=retrains + 1, reason=reason)
    raise unrepairable(error, why)
