"""The failure detail the operator reads from a genome Job's Pods (nora.operator.cluster)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nora.operator.cluster import latest_termination_message


def _pod(*terminated: dict[str, Any]) -> Mapping[str, Any]:
    statuses = [{"state": {"terminated": t}, "lastState": {}} for t in terminated]
    return {"status": {"containerStatuses": statuses}}


def test_an_oom_kill_is_named_from_the_pod_status() -> None:
    pods = [
        _pod({"exitCode": 1, "reason": "Error", "message": "older", "finishedAt": "2026-01-01T00:00:00Z"}),
        _pod(
            {
                "exitCode": 137,
                "reason": "OOMKilled",
                "message": "step 3",
                "finishedAt": "2026-01-01T00:01:00Z",
            }
        ),
    ]
    assert latest_termination_message(pods) == "OOMKilled: step 3"


def test_a_plain_error_keeps_the_programs_message_and_success_is_ignored() -> None:
    pods = [
        _pod({"exitCode": 2, "reason": "Error", "message": " spec.dataset: bad\n", "finishedAt": "b"}),
        _pod({"exitCode": 0, "reason": "Completed", "message": "fine", "finishedAt": "c"}),
    ]
    assert latest_termination_message(pods) == "spec.dataset: bad"
    assert latest_termination_message([_pod({"exitCode": 137, "reason": "OOMKilled"})]) == "OOMKilled"
    assert latest_termination_message([]) == ""
