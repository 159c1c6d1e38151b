"""The trainer against a real S3 server (versitygw on 127.0.0.1): everything read from and written to s3://.

genome.json, the base model, both data files, the starting adapter and all outputs live in the bucket; a
pickled weight file next to the model's safetensors is never downloaded. Marked ``integration`` because it
needs the S3 server built by the test tooling (``tests/support``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nora.evolution.genome_store import download_genome
from nora.storage import S3Store, open_uri
from nora.toy.data import write_dataset
from nora.toy.model import build_toy_model
from nora.trainer.entrypoint import main
from tests.support.s3 import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _upload(client: Any, bucket: str, key: str, data: bytes) -> str:
    client.put_object(Bucket=bucket, Key=key, Body=data)
    return f"s3://{bucket}/{key}"


def test_a_genome_entirely_on_s3(
    s3_server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NORA_NUM_THREADS", "1")
    monkeypatch.setenv("NORA_TERMINATION_LOG", str(tmp_path / "term"))
    monkeypatch.setenv("NORA_MODEL_CACHE", str(tmp_path / "model-cache"))
    client, bucket = s3_server.client(), s3_server.bucket
    read_keys: list[str] = []
    real_read = S3Store.read_bytes

    def recording_read(self: S3Store, key: str) -> bytes:
        read_keys.append(key)
        return real_read(self, key)

    monkeypatch.setattr(S3Store, "read_bytes", recording_read)
    toy = build_toy_model(tmp_path / "toy")
    for path in sorted(toy.iterdir()):
        _upload(client, bucket, f"models/toy/{path.name}", path.read_bytes())
    _upload(client, bucket, "models/toy/pytorch_model.bin", b"not a pickle; must never be downloaded")
    train, eval_ = write_dataset(tmp_path / "data", seed=0, n_train=8, n_eval=8)
    training = {"samplesPerPrompt": 4, "maxSteps": 2, "batchSize": 2, "maxPrompts": 4, "evalPrompts": 8}
    summaries = []
    adapter: str | None = None
    for generation in range(2):
        task = {
            "population": "s3",
            "generation": generation,
            "genome": f"s3-g{generation}-0",
            "seed": 3,
            "baseModel": {"uri": f"s3://{bucket}/models/toy/"},
            "dataset": {
                "train": _upload(client, bucket, "data/train.jsonl", train.read_bytes()),
                "eval": _upload(client, bucket, "data/eval.jsonl", eval_.read_bytes()),
            },
            "adapter": {"uri": adapter, "rank": 2, "alpha": 4.0, "targetModules": ["q_proj"]},
            "training": training,
            "output": f"s3://{bucket}/runs/g{generation}",
        }
        genome = _upload(client, bucket, f"runs/g{generation}/genome.json", json.dumps(task).encode())
        assert main(genome) == 0, capsys.readouterr().err[-2000:]
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        summaries.append(summary)
        adapter = summary["adapter"]
    assert summaries[1]["adapter"] == f"s3://{bucket}/runs/g1/adapter"
    store, key = open_uri(summaries[1]["adapter"])
    trained = download_genome(store, key)  # manifest verified
    assert [m.rank for m in trained.modules.values()] == [2] * len(trained.modules)
    metrics = json.loads(store.read_bytes("runs/g1/metrics.json"))
    assert metrics["generation"] == 1
    assert len(store.read_bytes("runs/g1/samples.jsonl").decode().splitlines()) == 8
    assert "models/toy/model.safetensors" in read_keys
    assert "models/toy/pytorch_model.bin" not in read_keys
