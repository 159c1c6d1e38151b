"""Which trainer failures are the store's fault (exit 75, never counted) and which are the genome's."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError

from nora.evolution import contract
from nora.trainer import entrypoint
from nora.trainer.errors import TrainerInputError


def _reply(status: int, code: str) -> ClientError:
    reply = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(reply, "GetObject")  # type: ignore[arg-type]


def test_an_unreachable_or_failing_store_is_transient_and_bad_input_is_not() -> None:
    assert contract.transient_failure(EndpointConnectionError(endpoint_url="http://s3:9000"))
    assert contract.transient_failure(ConnectTimeoutError(endpoint_url="http://s3:9000"))
    assert contract.transient_failure(_reply(503, "SlowDown"))
    assert not contract.transient_failure(_reply(403, "AccessDenied"))
    assert not contract.transient_failure(TrainerInputError("s3://b/k: not found"))
    wrapped = RuntimeError("while reading")
    wrapped.__cause__ = EndpointConnectionError(endpoint_url="http://s3:9000")
    assert contract.transient_failure(wrapped)


def test_the_trainer_exits_75_when_the_store_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def unreachable(uri: str) -> None:
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    monkeypatch.setattr(entrypoint, "load_job", unreachable)
    monkeypatch.setenv(contract.ENV_TERMINATION_LOG, str(tmp_path / "term"))
    assert entrypoint.main("s3://b/g0/x/genome.json", stdout=io.StringIO()) == contract.EXIT_TRANSIENT
    assert "EndpointConnectionError" in (tmp_path / "term").read_text()
    assert contract.retryable(contract.EXIT_TRANSIENT)
