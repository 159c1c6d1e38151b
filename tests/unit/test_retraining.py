"""The shared decision on a stored adapter that fails verification: whose it is, and re-train or fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from nora.evolution import retraining
from nora.evolution.genome_store import upload_genome
from nora.evolution.layout import adapter_owner, job_name, trained_adapter_key
from nora.evolution.records import GenomePlan
from nora.evolution.run_store import CorruptAdapterError
from nora.storage import LocalStore
from tests.unit.factories import random_genome

DETAIL = "s3://b/p/ns/pop/g0/pop-g0-1/output/adapter/adapter_model.safetensors: sha256 does not match"


def _error() -> CorruptAdapterError:
    return CorruptAdapterError("pop-g1-0", DETAIL, "p/ns/pop/g0/pop-g0-1/output/adapter")


def test_the_owner_of_an_adapter_is_the_genome_that_trained_it() -> None:
    key = trained_adapter_key("p/ns", "pop", 3, "pop-g3-12")
    assert adapter_owner("p/ns", "pop", key) == (3, "pop-g3-12")
    assert adapter_owner("p/ns", "pop", "p/ns/pop/g3/pop-g3-12/start") is None
    assert adapter_owner("p/ns", "pop", "p/ns/pop/best") is None
    assert adapter_owner("p/ns", "other", key) is None
    assert adapter_owner("p/ns", "pop", "s3://seeds/adapter") is None
    assert (job_name("pop-g3-12"), job_name("pop-g3-12", 1)) == ("pop-g3-12", "pop-g3-12-r1")


def test_a_genome_is_re_trained_once_then_the_run_fails_naming_genome_and_key() -> None:
    retrain = retraining.retrain_or_fail(_error(), (0, "pop-g0-1"), 0, None)
    assert retrain == retraining.Retrain(0, "pop-g0-1", 1, f"re-training (attempt 1): {DETAIL}")
    with pytest.raises(CorruptAdapterError, match=r"^genome pop-g1-0: s3://.*re-trained 1 time\(s\) already"):
        retraining.retrain_or_fail(_error(), (0, "pop-g0-1"), 1, None)
    with pytest.raises(CorruptAdapterError, match="its start adapter is corrupt too: the start"):
        retraining.retrain_or_fail(_error(), (0, "pop-g0-1"), 0, "the start")
    with pytest.raises(CorruptAdapterError, match="not a genome's own trained adapter") as caught:
        retraining.retrain_or_fail(_error(), None, 0, None)
    assert caught.value.key == _error().key


def test_only_a_bred_start_adapter_is_checked(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    upload_genome(store, "pop/g1/pop-g1-0/start", random_genome(seed=1))
    bred = GenomePlan(
        id="pop-g1-0", index=0, generation=1, origin="mutation", adapter="pop/g1/pop-g1-0/start"
    )
    fresh = GenomePlan(id="pop-g0-0", index=0, generation=0, origin="initial")
    assert retraining.start_problem(store, bred) is None
    assert retraining.start_problem(store, fresh) is None
    store.write_bytes("pop/g1/pop-g1-0/start/adapter_model.safetensors", b"rewritten")
    problem = retraining.start_problem(store, bred)
    assert problem is not None
    assert "pop/g1/pop-g1-0/start/adapter_model.safetensors: sha256 does not match" in problem
