"""The S3 store against a real S3-compatible server on 127.0.0.1 (versitygw)."""

from __future__ import annotations

import pytest
import torch

from nora.evolution.genome_store import download_genome, upload_genome
from nora.storage import S3Store, StoreError
from tests.support.s3 import S3Server
from tests.unit.factories import random_genome

pytestmark = pytest.mark.integration


def test_s3_store_round_trips_lists_and_verifies_checksums(s3_server: S3Server) -> None:
    client = s3_server.client()
    store = S3Store(bucket=s3_server.bucket, client=client)
    store.write_bytes("t/pop/g0/b.json", b"{}")
    store.write_bytes("t/pop/g0/a.json", b"[]")
    assert store.read_bytes("t/pop/g0/a.json") == b"[]"
    assert store.list("t/pop/g0") == ["t/pop/g0/a.json", "t/pop/g0/b.json"]
    assert store.exists("t/pop/g0/a.json")
    assert not store.exists("t/pop/g0/a")
    with pytest.raises(StoreError, match="not found"):
        store.read_bytes("t/pop/none.json")
    client.put_object(
        Bucket=s3_server.bucket, Key="t/bad.json", Body=b"tampered", Metadata={"sha256": "0" * 64}
    )
    with pytest.raises(StoreError, match="sha256 does not match"):
        store.read_bytes("t/bad.json")


def test_genomes_round_trip_through_s3(s3_server: S3Server) -> None:
    store = S3Store(bucket=s3_server.bucket, client=s3_server.client())
    genome = random_genome(2, dtype=torch.bfloat16)
    upload_genome(store, "t/pop/g0/pop-g0-1/adapter", genome)
    loaded = download_genome(store, "t/pop/g0/pop-g0-1/adapter")
    assert loaded.dtype == torch.bfloat16
    assert loaded.ranks == genome.ranks
