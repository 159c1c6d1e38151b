"""Pure transitions of ``Population.status`` that only a cluster has: conditions and the merge patch.

The rest of the status (history, best genome, verdict, resumption) is the Population's record, kept by
:mod:`nora.evolution.ledger` for both drivers. Everything here is bounded: one condition per type.
"""

from __future__ import annotations

from nora.api.status import Condition, ConditionStatus, PopulationStatus
from nora.operator.objects import JSON


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
