"""The trainer's shared model cache: one fetch per URI across workers, complete copies only, clear errors."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nora.storage import LocalStore
from nora.trainer import model_cache
from nora.trainer.entrypoint import fetch_main
from nora.trainer.errors import TrainerInputError

URI = "s3://models/tiny-llama/"


@dataclass(frozen=True)
class CountingStore:
    """A local store that counts the objects and bytes read from it."""

    inner: LocalStore
    reads: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def uri(self, key: str) -> str:
        return self.inner.uri(key)

    def read_bytes(self, key: str) -> bytes:
        with self.lock:
            self.reads.append(key)
        return self.inner.read_bytes(key)

    def write_bytes(self, key: str, data: bytes) -> None:
        self.inner.write_bytes(key, data)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    local = LocalStore(tmp_path / "bucket")
    local.write_bytes("tiny-llama/config.json", b'{"model_type": "llama"}')
    local.write_bytes("tiny-llama/model.safetensors", b"w" * 1000)
    local.write_bytes("tiny-llama/tokenizer/tokenizer.json", b"{}")
    local.write_bytes("tiny-llama/pytorch_model.bin", b"pickle")
    return CountingStore(local)


def test_many_workers_fetch_the_model_once_and_share_one_copy(tmp_path: Path, store: CountingStore) -> None:
    root = tmp_path / "cache"
    results: list[Path] = []

    def worker() -> None:
        results.append(model_cache.cached_model(URI, root, model_cache.fetch_s3(store, "tiny-llama", URI)))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 6
    assert len(set(results)) == 1
    assert sorted(store.reads) == [
        "tiny-llama/config.json",
        "tiny-llama/model.safetensors",
        "tiny-llama/tokenizer/tokenizer.json",
    ]  # once each, and never the pickle
    folder = results[0]
    assert (folder / "tokenizer" / "tokenizer.json").read_bytes() == b"{}"
    assert not (folder / "pytorch_model.bin").exists()
    assert model_cache.complete_copy(URI, root) == folder
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [folder.name]


def test_a_cut_off_fetch_leaves_no_copy_and_the_next_one_fetches_again(
    tmp_path: Path, store: CountingStore
) -> None:
    root = tmp_path / "cache"

    def broken(target: Path) -> None:
        (target / "config.json").write_text("{}")
        raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        model_cache.cached_model(URI, root, broken)
    assert model_cache.complete_copy(URI, root) is None
    assert [p for p in root.iterdir() if "partial" in p.name] == []
    model_cache.cached_model(URI, root, model_cache.fetch_s3(store, "tiny-llama", URI))
    assert len(store.reads) == 3


def test_keys_differ_per_uri_and_are_safe_folder_names() -> None:
    one, two = model_cache.cache_key("s3://b/m/"), model_cache.cache_key("s3://b/m@x/")
    assert one != two
    assert one.startswith("m-")
    assert "/" not in model_cache.cache_key("hf://org/name@rev/../..")


def test_a_store_without_safetensors_is_bad_input(tmp_path: Path) -> None:
    local = LocalStore(tmp_path / "bucket")
    local.write_bytes("m/pytorch_model.bin", b"pickle")
    with pytest.raises(TrainerInputError, match=r"baseModel\.uri: s3://b/m/ holds no \.safetensors"):
        model_cache.cached_model(
            "s3://b/m/", tmp_path / "cache", model_cache.fetch_s3(local, "m", "s3://b/m/")
        )


def test_an_unwritable_cache_without_the_model_names_the_initializer(tmp_path: Path) -> None:
    (tmp_path / "volume").write_text("not a folder")  # the tests run as root: chmod would not stop them
    with pytest.raises(TrainerInputError, match=r"baseModel\.uri: .* not writable .*model-initializer Job"):
        model_cache.cached_model(URI, tmp_path / "volume" / "models", lambda target: None)


def test_the_cache_root_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NORA_MODEL_CACHE", raising=False)
    monkeypatch.setenv("NORA_CACHE_DIR", str(tmp_path / "nora"))
    assert model_cache.cache_root() == tmp_path / "nora" / "models"
    assert model_cache.mounted_copy(URI) is None
    monkeypatch.setenv("NORA_MODEL_CACHE", str(tmp_path / "mounted"))
    assert model_cache.cache_root() == tmp_path / "mounted"


def test_a_mounted_copy_of_a_hub_model_is_loaded_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nora.trainer import models

    uri = "hf://org/model@v1"

    def fetch(target: Path) -> None:
        (target / "config.json").write_text("{}")

    copy = model_cache.cached_model(uri, tmp_path, fetch)
    monkeypatch.setenv("NORA_MODEL_CACHE", str(tmp_path))
    assert models.resolve_model(uri) == models.ModelSource(str(copy), None, True)


def test_fetch_model_command_prints_the_folder_and_exits_2_on_bad_input(
    tmp_path: Path, store: CountingStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NORA_TERMINATION_LOG", str(tmp_path / "termination"))
    bucket = store.inner.root
    assert fetch_main((bucket / "tiny-llama").as_uri(), tmp_path / "cache") == 2
    assert "is not fetched into a cache; use s3:// or hf://" in (tmp_path / "termination").read_text()
    monkeypatch.setattr(model_cache, "fetcher", lambda uri: model_cache.fetch_s3(store, "tiny-llama", uri))
    assert fetch_main(URI, tmp_path / "cache") == 0
    assert fetch_main(URI, tmp_path / "cache") == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "cache" / model_cache.cache_key(URI))] * 2
    assert len(store.reads) == 3


def test_hub_models_are_fetched_without_pickles_and_hub_errors_name_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    calls: list[dict[str, object]] = []

    def snapshot(**kwargs: object) -> str:
        calls.append(kwargs)
        if kwargs["repo_id"] == "org/gated":
            raise OSError("401 Client Error: gated repo\nmore detail")
        target = Path(str(kwargs["local_dir"]))
        (target / ".cache").mkdir()
        (target / "config.json").write_text("{}")
        if kwargs["repo_id"] == "org/model":
            (target / "model.safetensors").write_bytes(b"w")
        return str(target)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    folder = model_cache.cached_model("hf://org/model@v2", tmp_path, model_cache.fetcher("hf://org/model@v2"))
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.safetensors",
        model_cache.MARKER,
    ]
    assert (calls[0]["repo_id"], calls[0]["revision"]) == ("org/model", "v2")
    patterns = calls[0]["allow_patterns"]
    assert isinstance(patterns, list)
    assert "*.safetensors" in patterns
    assert not any(p.endswith((".bin", ".pt", ".pth", ".ckpt")) for p in patterns)
    with pytest.raises(
        TrainerInputError, match=r"^baseModel\.uri: cannot download hf://org/gated: 401 Client"
    ):
        model_cache.cached_model("hf://org/gated", tmp_path, model_cache.fetcher("hf://org/gated"))
    with pytest.raises(TrainerInputError, match=r"^baseModel\.uri: hf://org/pickled has no \.safetensors"):
        model_cache.cached_model("hf://org/pickled", tmp_path, model_cache.fetcher("hf://org/pickled"))
    assert model_cache.complete_copy("hf://org/gated", tmp_path) is None
