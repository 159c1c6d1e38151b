"""A minimal JSON-over-HTTPS client for the test apiserver (used by the fixtures and the kubelet harness)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class ApiError(RuntimeError):
    """A non-2xx answer from the apiserver."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:2000]}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class KubeHTTP:
    """Talks to ``server`` (https://127.0.0.1:port) with a bearer token, trusting ``ca_cert``."""

    server: str
    token: str
    ca_cert: Path
    timeout: float = 30.0

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_cert))

    def request(
        self,
        method: str,
        path: str,
        body: JSON | None = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        """Send one request; return the decoded JSON answer (``{}`` for an empty body)."""
        url = self.server + path + (("?" + urllib.parse.urlencode(params)) if params else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._context()) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raise ApiError(err.code, method, path, err.read().decode(errors="replace")) from None
        return json.loads(raw) if raw else {}

    def raw(self, path: str) -> str:
        """GET ``path`` and return the body as text (for /readyz, /version-style endpoints)."""
        req = urllib.request.Request(self.server + path)
        req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._context()) as resp:
                return str(resp.read().decode(errors="replace"))
        except urllib.error.HTTPError as err:
            raise ApiError(err.code, "GET", path, err.read().decode(errors="replace")) from None

    def get(self, path: str, **params: str) -> JSON:
        """GET ``path`` (query parameters as keywords)."""
        return self.request("GET", path, params=params or None)

    def get_or_none(self, path: str) -> JSON | None:
        """GET ``path``, or None when it does not exist (404)."""
        try:
            return self.get(path)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def post(self, path: str, body: JSON) -> JSON:
        """POST (create) ``body`` at ``path``."""
        return self.request("POST", path, body)

    def put(self, path: str, body: JSON) -> JSON:
        """PUT (replace) ``body`` at ``path``."""
        return self.request("PUT", path, body)

    def patch(self, path: str, body: JSON, content_type: str = MERGE_PATCH) -> JSON:
        """PATCH ``path`` with a merge (default) or strategic-merge patch."""
        return self.request("PATCH", path, body, content_type=content_type)

    def delete(self, path: str, grace_seconds: int | None = None, propagation: str | None = None) -> JSON:
        """DELETE ``path``; 404 counts as done."""
        options: JSON = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_seconds is not None:
            options["gracePeriodSeconds"] = grace_seconds
        if propagation is not None:
            options["propagationPolicy"] = propagation
        try:
            return self.request("DELETE", path, options)
        except ApiError as err:
            if err.status == 404:
                return {}
            raise
