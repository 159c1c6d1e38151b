"""Local store and URI parsing: atomic writes, listing, key checks, genome round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nora.api.placement import SecretRef, StorageSpec
from nora.evolution.genome_store import download_genome, upload_genome
from nora.genetics import GenomeFormatError
from nora.operator.storage import S3Stores
from nora.storage import LocalStore, S3Store, StoreError, open_uri
from tests.unit.factories import random_genome


def test_local_store_round_trips_and_lists_sorted(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes("pop/g0/b/metrics.json", b"{}")
    store.write_bytes("pop/g0/a/metrics.json", b"[]")
    assert store.read_bytes("pop/g0/a/metrics.json") == b"[]"
    assert store.list("pop/g0") == ["pop/g0/a/metrics.json", "pop/g0/b/metrics.json"]
    assert store.list("pop/none") == []
    assert store.exists("pop/g0/a/metrics.json")
    assert not store.exists("pop/g0/c")
    store.write_bytes("pop/g0/a/metrics.json", b"replaced")
    assert store.read_bytes("pop/g0/a/metrics.json") == b"replaced"
    assert not [p for p in (tmp_path / "pop/g0/a").iterdir() if p.name.startswith(".")], "no temp files left"


def test_missing_keys_and_bad_keys_are_named(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(StoreError, match=r"missing\.json: not found"):
        store.read_bytes("missing.json")
    for key in ("../escape", "a//b", "", "a/./b"):
        with pytest.raises(StoreError, match="invalid store key"):
            store.write_bytes(key, b"x")


def test_open_uri_understands_file_paths_and_s3(tmp_path: Path) -> None:
    store, key = open_uri((tmp_path / "x" / "y.json").as_uri())
    assert isinstance(store, LocalStore)
    store.write_bytes(key, b"1")
    assert (tmp_path / "x" / "y.json").read_bytes() == b"1"
    plain, plain_key = open_uri(str(tmp_path / "x" / "y.json"))
    assert plain.read_bytes(plain_key) == b"1"
    s3, s3_key = open_uri("s3://bucket/pop/g0/genome.json")
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3_key) == ("bucket", "pop/g0/genome.json")
    with pytest.raises(StoreError, match="needs a bucket and a key"):
        open_uri("s3://bucket-only")
    with pytest.raises(StoreError, match="unsupported URI scheme"):
        open_uri("gs://bucket/key")


def test_genomes_round_trip_through_a_store_and_corruption_is_caught(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    genome = random_genome(1).with_hyperparameters({"learning_rate": 1e-4})
    upload_genome(store, "pop/g0/pop-g0-0/adapter", genome)
    loaded = download_genome(store, "pop/g0/pop-g0-0/adapter")
    assert loaded.hyperparameters == {"learning_rate": 1e-4}
    name = next(iter(genome.modules))
    assert torch.equal(loaded.modules[name].a, genome.modules[name].a)
    store.write_bytes("pop/g0/pop-g0-0/adapter/adapter_config.json", b'{"r": 4}')
    with pytest.raises(GenomeFormatError, match=r"adapter_config\.json: sha256 does not match"):
        download_genome(store, "pop/g0/pop-g0-0/adapter")
    with pytest.raises(StoreError, match="no complete adapter here"):
        download_genome(store, "pop/g0/other/adapter")


def test_file_uris_with_escaped_characters_are_decoded(tmp_path: Path) -> None:
    path = tmp_path / "with space" / "x.json"
    store, key = open_uri(path.as_uri())
    store.write_bytes(key, b"1")
    assert path.read_bytes() == b"1"


def test_a_population_without_a_secret_gets_the_operator_identity_only_where_allowed() -> None:
    secrets = {("team-a", "s3"): {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "key"}}
    stores = S3Stores(lambda ns, name: secrets[(ns, name)], ambient=frozenset({"trusted"}))
    with pytest.raises(StoreError, match=r"^spec\.storage\.secretRef: required in this namespace"):
        stores.access("team-a", StorageSpec(bucket="bkt"))
    assert stores.access("trusted", StorageSpec(bucket="bkt")).access_key is None  # the ambient identity
    with_secret = stores.access("team-a", StorageSpec(bucket="bkt", secret_ref=SecretRef(name="s3")))
    assert (with_secret.access_key, with_secret.secret_key) == ("id", "key")


def test_an_endpoint_outside_the_allow_list_is_refused_by_name() -> None:
    hosts = frozenset({"s3.local:9000"})
    stores = S3Stores(lambda ns, name: {}, ambient=frozenset({"ns"}), endpoint_hosts=hosts)
    assert stores.access("ns", StorageSpec(bucket="bkt", endpoint="http://s3.local:9000")).endpoint
    with pytest.raises(StoreError, match=r"^spec\.storage\.endpoint: 169\.254\.169\.254 is not among"):
        stores.access("ns", StorageSpec(bucket="bkt", endpoint="http://169.254.169.254"))
