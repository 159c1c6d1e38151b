"""Pure transitions of ``Population.status`` that only a cluster has: conditions and the merge patch.

The rest of the status (history, best genome, verdict, resumption) is the Population's record, kept by
:mod:`nora.evolution.ledger` for both drivers. Everything here is bounded: one condition per type.
"""

from __future__ import annotations

from collections.abc import Sequence

from nora.api.status import Condition, ConditionStatus, PopulationStatus
from nora.evolution.records import GenomeResult
from nora.operator.objects import JSON

FAILED_CREATE = "FailedCreate: "
"""How a genome's status message starts while its Job's Pods cannot be created."""
PODS_CREATABLE = "PodsCreatable"


def set_condition(
    status: PopulationStatus,
    kind: str,
    value: bool,
    reason: str,
    message: str,
    now: str,
    observed: int | None = None,
) -> PopulationStatus:
    """``status`` with condition ``kind`` set (its transition time kept when its value did not change)."""
    text: ConditionStatus = "True" if value else "False"
    old = next((c for c in status.conditions if c.type == kind), None)
    since = old.last_transition_time if old is not None and old.status == text else now
    condition = Condition(
        type=kind,
        status=text,
        reason=reason,
        message=message[:4096],
        last_transition_time=since,
        observed_generation=observed,
    )
    others = [c for c in status.conditions if c.type != kind]
    return status.model_copy(update={"conditions": sorted([*others, condition], key=lambda c: c.type)})


def status_patch(status: PopulationStatus) -> JSON:
    """The merge patch that makes the stored status equal ``status`` (absent optional fields deleted)."""
    return status.model_dump(mode="json", by_alias=True)


def blocked_genomes(results: Sequence[GenomeResult]) -> list[GenomeResult]:
    """The unfinished genomes whose Pods cannot be created (their message says ``FailedCreate: why``)."""
    return [r for r in results if not r.finished and r.message.startswith(FAILED_CREATE)]


def pods_creatable(
    status: PopulationStatus, results: Sequence[GenomeResult], now: str, observed: int | None
) -> PopulationStatus:
    """``status`` with ``PodsCreatable``: False (reason ``FailedCreate``) naming the first blocked genome and
    the cause, True again once none is blocked; absent while no genome ever was."""
    blocked = blocked_genomes(results)
    if blocked:
        first = blocked[0]
        more = f" (and {len(blocked) - 1} more genomes)" if len(blocked) > 1 else ""
        cause = first.message.removeprefix(FAILED_CREATE)
        message = f"the Pods of genome {first.id} cannot be created{more}: {cause}"
        return set_condition(status, PODS_CREATABLE, False, "FailedCreate", message, now, observed)
    if any(c.type == PODS_CREATABLE and c.status == "False" for c in status.conditions):
        message = "the Pods of every started genome were created"
        return set_condition(status, PODS_CREATABLE, True, "PodsCreated", message, now, observed)
    return status
