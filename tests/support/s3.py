"""An S3-compatible server for tests: versitygw (posix backend, temp dir) on 127.0.0.1 with static keys."""

from __future__ import annotations

import os
import secrets
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.controlplane import Processes, free_port
from tests.support.procs import ManagedProcess
from tests.support.waiting import wait_for

REGION = "us-east-1"
BUCKET = "nora-test"


@dataclass(frozen=True)
class S3Server:
    """A running S3 endpoint, its credentials and the test bucket (already created)."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    region: str
    root: Path
    access_log: Path

    def get_requests(self, key: str) -> int:
        """GetObject requests for ``key`` so far, counted from the server's own access log."""
        text = (
            self.access_log.read_text(encoding="utf-8", errors="replace") if self.access_log.exists() else ""
        )
        return sum(1 for line in text.splitlines() if " s3_GetObject " in line and f" {key} " in f" {line} ")

    def client(self) -> Any:
        """A boto3 S3 client for this server (path-style addressing)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    def env(self) -> dict[str, str]:
        """Environment variables that point an AWS SDK (boto3 >= 1.28) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }


def start(procs: Processes, binary: Path, workdir: Path, timeout: float = 60.0) -> S3Server:
    """Start versitygw on a free port (metadata in a sidecar dir, so no xattrs are needed), wait for its
    health endpoint and create the test bucket."""
    root, sidecar = workdir / "data", workdir / "meta"
    root.mkdir(parents=True, exist_ok=True)
    sidecar.mkdir(parents=True, exist_ok=True)
    port = free_port()
    access, secret = "nora" + secrets.token_hex(6), secrets.token_hex(20)
    gw = procs.add(
        ManagedProcess(
            "versitygw",
            [
                str(binary),
                "--region",
                REGION,
                "--port",
                f"127.0.0.1:{port}",
                "--health",
                "/health",
                "--quiet",
                "--access-log",
                str(workdir / "access.log"),
                "posix",
                "--sidecar",
                str(sidecar),
                str(root),
            ],
            workdir / "versitygw.log",
            env={**os.environ, "ROOT_ACCESS_KEY": access, "ROOT_SECRET_KEY": secret},
        )
    )
    endpoint = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        gw.ensure_alive()
        with urllib.request.urlopen(f"{endpoint}/health", timeout=5) as resp:
            return bool(resp.status == 200)

    wait_for(healthy, timeout=timeout, what="versitygw /health", on_timeout=gw.describe)
    server = S3Server(
        endpoint=endpoint,
        access_key=access,
        secret_key=secret,
        bucket=BUCKET,
        region=REGION,
        root=root,
        access_log=workdir / "access.log",
    )
    server.client().create_bucket(Bucket=BUCKET)
    return server
