"""How the operator reports a failed pass: a stable kind, a message without remote free text, a back-off.

A repeated error must not write the same condition and Event on every pass: API errors carry changing
``Audit-Id``/``Date`` headers and other errors random temporary paths, so errors are compared by their
:func:`error_kind` (type, HTTP status or S3 error code), never by their text. Messages name what failed
by code (``S3 PutObject: NoSuchBucket``, ``Kubernetes API 403 Forbidden: ...``), never by echoing a remote
server's response body, which a user-set endpoint controls.
"""

from __future__ import annotations

import json
from typing import Any

from nora.evolution import contract

BACKOFF_BASE_SECONDS = 5.0
BACKOFF_CAP_SECONDS = 300.0
_TRANSIENT_NAMES = contract.TRANSIENT_STORE_ERRORS | frozenset(
    {
        "MaxRetryError",
        "NewConnectionError",
        "ProtocolError",
    }
)


def _s3_code(error: BaseException) -> tuple[str, str] | None:
    response = getattr(error, "response", None)
    if not isinstance(response, dict) or "Error" not in response:
        return None
    return str(getattr(error, "operation_name", "")), str(response["Error"].get("Code", "Unknown"))


def _api_status(error: BaseException) -> tuple[int, str, str] | None:
    status, reason = getattr(error, "status", None), getattr(error, "reason", None)
    if not isinstance(status, int) or not hasattr(error, "body"):
        return None
    try:
        body: Any = json.loads(getattr(error, "body", None) or "{}")
    except (TypeError, ValueError):
        body = {}
    detail = body.get("message", "") if isinstance(body, dict) else ""
    return status, str(reason or ""), str(detail)


def error_kind(error: BaseException) -> str:
    """What makes two failures "the same error": the type and its status or code, never the text."""
    if (s3 := _s3_code(error)) is not None:
        return f"{type(error).__name__}:{s3[0]}:{s3[1]}"
    if (api := _api_status(error)) is not None:
        return f"{type(error).__name__}:{api[0]}:{api[1]}"
    return type(error).__name__


def error_message(error: BaseException) -> str:
    """The error for a condition or an Event: by code for S3 and API errors, never their raw response."""
    if (s3 := _s3_code(error)) is not None:
        return f"S3 {s3[0]}: {s3[1]}"
    if (api := _api_status(error)) is not None:
        status, reason, detail = api
        return f"Kubernetes API {status} {reason}: {detail}".rstrip(": ")
    return f"{type(error).__name__}: {error}"


def transient(error: BaseException) -> bool:
    """Whether the cause lies outside the Population (S3 or the apiserver unreachable, overloaded)."""
    if type(error).__name__ in _TRANSIENT_NAMES or isinstance(error, ConnectionError | TimeoutError):
        return True
    api = _api_status(error)
    return api is not None and (api[0] in (0, 429) or api[0] >= 500)


def backoff_seconds(failures: int) -> float:
    """The pause after ``failures`` failed passes in a row: doubling from 5 s, at most 5 minutes."""
    doubling: float = 2.0 ** min(max(0, failures - 1), 32)
    return min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * doubling)
