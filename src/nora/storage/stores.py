"""Key-value stores for genomes and records: a local folder and S3, with one key layout.

Keys are ``/``-separated relative paths (``<prefix>/<population>/g<N>/<genome>/...``). Writes are atomic:
a local write goes to a temporary file renamed into place; an S3 PUT is atomic by nature and carries
the object's sha256 in its metadata, which every read verifies.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote


class StoreError(OSError):
    """A store operation failed; the message names the URI."""


class Store(Protocol):
    """What the engine, trainer and drivers need from storage."""

    def uri(self, key: str) -> str:
        """The URI of ``key`` (for messages and records)."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; raises :class:`StoreError` if it is missing or corrupted."""
        ...

    def write_bytes(self, key: str, data: bytes) -> None:
        """Replace the object atomically."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a folder-like prefix), sorted."""
        ...


def _check_key(key: str) -> str:
    parts = key.strip("/").split("/")
    if not key.strip("/") or any(part in ("", ".", "..") for part in parts):
        raise StoreError(f"invalid store key {key!r}: use a relative path without '.', '..' or empty parts")
    return "/".join(parts)


@dataclass(frozen=True)
class LocalStore:
    """A folder on the local filesystem (the embedded default)."""

    root: Path

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def uri(self, key: str) -> str:
        return self._path(key).resolve().as_uri()

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{self.uri(key)}: not found") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )


SHA256_METADATA = "sha256"


@dataclass(frozen=True)
class S3Store:
    """An S3 bucket (any S3-compatible server); ``client`` is a boto3 S3 client."""

    bucket: str
    client: Any

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{_check_key(key)}"

    def read_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=_check_key(key))
        except self.client.exceptions.NoSuchKey:
            raise StoreError(f"{self.uri(key)}: not found") from None
        from botocore.exceptions import FlexibleChecksumError

        try:
            data: bytes = response["Body"].read()
        except FlexibleChecksumError as error:  # botocore's message names no object
            raise StoreError(f"{self.uri(key)}: checksum does not match ({error})") from None
        expected = response.get("Metadata", {}).get(SHA256_METADATA)
        if expected and hashlib.sha256(data).hexdigest() != expected:
            raise StoreError(f"{self.uri(key)}: sha256 does not match the object's metadata (corrupted read)")
        return data

    def write_bytes(self, key: str, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        self.client.put_object(
            Bucket=self.bucket, Key=_check_key(key), Body=data, Metadata={SHA256_METADATA: digest}
        )

    def exists(self, key: str) -> bool:
        response = self.client.list_objects_v2(Bucket=self.bucket, Prefix=_check_key(key), MaxKeys=1)
        return any(item["Key"] == _check_key(key) for item in response.get("Contents", []))

    def list(self, prefix: str) -> list[str]:
        folder = _check_key(prefix) + "/"
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)


def s3_client(endpoint: str | None = None, region: str | None = None) -> Any:
    """A boto3 S3 client; credentials come from the standard AWS environment variables."""
    import boto3
    from botocore.config import Config

    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint, region_name=region or "us-east-1", config=config)


def open_uri(uri: str) -> tuple[Store, str]:
    """The store and key of ``file:///abs/path``, a plain local path, or ``s3://bucket/key``."""
    if uri.startswith("s3://"):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not bucket or not key.strip("/"):
            raise StoreError(f"{uri}: an S3 URI needs a bucket and a key, e.g. s3://bucket/path/file")
        return S3Store(bucket=bucket, client=s3_client()), key.strip("/")
    if "://" in uri and not uri.startswith("file://"):
        raise StoreError(f"{uri}: unsupported URI scheme; use file:// or s3://")
    path = Path(unquote(uri.removeprefix("file://"))).expanduser().resolve()
    return LocalStore(root=Path(path.anchor)), path.relative_to(path.anchor).as_posix()
