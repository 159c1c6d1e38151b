"""How failed passes are compared, worded and spaced (pure logic; the real clients' exception shapes)."""

from __future__ import annotations

from botocore.exceptions import ClientError, EndpointConnectionError
from kubernetes.client.exceptions import ApiException

from nora.operator.errors import backoff_seconds, error_kind, error_message, transient


def _forbidden(audit: str) -> ApiException:
    error = ApiException(status=403, reason="Forbidden")
    error.body = '{"message": "jobs.batch \\"x\\" is forbidden: exceeded quota: no-jobs"}'
    error.headers = {"Audit-Id": audit}
    return error


def test_api_errors_are_the_same_kind_whatever_their_headers_and_are_worded_without_them() -> None:
    first, second = _forbidden("a1"), _forbidden("b2")
    assert str(first) != str(second)
    assert error_kind(first) == error_kind(second) == "ApiException:403:Forbidden"
    expected = 'Kubernetes API 403 Forbidden: jobs.batch "x" is forbidden: exceeded quota: no-jobs'
    assert error_message(first) == expected
    assert not transient(first)
    assert transient(ApiException(status=503, reason="Service Unavailable"))


def test_s3_errors_are_reported_by_code_never_by_the_servers_text() -> None:
    reply = {"Error": {"Code": "AccessDenied", "Message": "<html>whatever the endpoint says</html>"}}
    error = ClientError(reply, "PutObject")  # type: ignore[arg-type]
    assert error_message(error) == "S3 PutObject: AccessDenied"
    assert error_kind(error) == "ClientError:PutObject:AccessDenied"
    assert transient(EndpointConnectionError(endpoint_url="http://s3:9000"))


def test_the_back_off_doubles_up_to_five_minutes() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3, 6, 7, 50)] == [5.0, 10.0, 20.0, 160.0, 300.0, 300.0]
