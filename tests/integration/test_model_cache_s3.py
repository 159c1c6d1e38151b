"""The model cache in local mode: a Population's genomes read an ``s3://`` base model from the server once.

A real ``nora run`` (3 genomes x 2 generations, 2 workers at a time) trains on the toy model stored in
the S3 server (versitygw). Its GetObject requests for the model's files are counted from the server's
own access log, not from anything the trainer reports: each file is read once for the whole run, and
every genome loads the one shared copy in ``$NORA_MODEL_CACHE``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from nora.local.state import load_state
from nora.toy.data import write_dataset
from nora.toy.model import build_toy_model
from nora.trainer.model_cache import MARKER
from tests.support.s3 import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PREFIX = "models/cache-toy"


def _spec(model_uri: str, train: Path, eval_: Path) -> dict[str, Any]:
    return {
        "baseModel": {"uri": model_uri},
        "dataset": {"train": train.as_uri(), "eval": eval_.as_uri()},
        "populationSize": 3,
        "maxGenerations": 2,
        "seed": 5,
        "selection": {"method": "tournament", "survivors": 2, "elites": 1, "tournamentSize": 2},
        "adapter": {"initialRank": 2, "alpha": 4, "targetModules": ["q_proj", "v_proj"]},
        "training": {
            "samplesPerPrompt": 2,
            "pairsPerPrompt": 1,
            "maxSteps": 2,
            "batchSize": 2,
            "maxPrompts": 4,
            "maxNewTokens": 32,
            "evalPrompts": 8,
        },
        "parallelism": 2,
    }


def test_a_population_reads_the_s3_base_model_once(s3_server: S3Server, tmp_path: Path) -> None:
    client, bucket = s3_server.client(), s3_server.bucket
    toy = build_toy_model(tmp_path / "toy")
    files = sorted(path.name for path in toy.iterdir())
    for name in files:
        client.put_object(Bucket=bucket, Key=f"{PREFIX}/{name}", Body=(toy / name).read_bytes())
    train, eval_ = write_dataset(tmp_path / "data", seed=0, n_train=16, n_eval=8)
    manifest = tmp_path / "cache.yaml"
    document = {
        "apiVersion": "nora.dev/v1alpha1",
        "kind": "Population",
        "metadata": {"name": "cache"},
        "spec": _spec(f"s3://{bucket}/{PREFIX}/", train, eval_),
    }
    manifest.write_text(yaml.safe_dump(document), encoding="utf-8")
    env = {**os.environ, **s3_server.env(), "NORA_MODEL_CACHE": str(tmp_path / "models")}
    run = subprocess.run(
        [sys.executable, "-m", "nora", "run", str(manifest), "--dir", str(tmp_path / "run")],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=1500,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    state = load_state(tmp_path / "run")
    assert state is not None
    trained = [r for g in state.generations for r in g.results if r.phase == "Succeeded"]
    assert len(trained) >= 5  # generation 1 may carry its elite over untrained
    model_bytes = sum((toy / name).stat().st_size for name in files)
    reads = {name: s3_server.get_requests(f"{PREFIX}/{name}") for name in files}
    print(f"\nbase model: {model_bytes} bytes; genomes trained: {len(trained)}; GETs per file: {reads}")
    assert reads == dict.fromkeys(files, 1)
    copies = [p for p in (tmp_path / "models").iterdir() if (p / MARKER).exists()]
    assert len(copies) == 1


def test_the_initializer_command_fetches_once_into_the_volume(s3_server: S3Server, tmp_path: Path) -> None:
    """``nora fetch-model`` as the model-initializer Job runs it, twice on one volume (a re-created Job)."""
    client, bucket, prefix = s3_server.client(), s3_server.bucket, "models/init-toy"
    client.put_object(Bucket=bucket, Key=f"{prefix}/config.json", Body=b'{"model_type": "llama"}')
    client.put_object(Bucket=bucket, Key=f"{prefix}/model.safetensors", Body=b"\0" * 4096)
    client.put_object(Bucket=bucket, Key=f"{prefix}/pytorch_model.bin", Body=b"never fetched")
    command = [
        sys.executable,
        "-m",
        "nora",
        "fetch-model",
        f"s3://{bucket}/{prefix}/",
        str(tmp_path / "volume"),
    ]
    env = {**os.environ, **s3_server.env()}
    runs = [
        subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=300)
        for _ in "ab"
    ]
    assert [run.returncode for run in runs] == [0, 0], runs[0].stderr[-2000:]
    folder = Path(runs[0].stdout.strip())
    assert runs[1].stdout.strip() == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["config.json", MARKER, "model.safetensors"])
    assert s3_server.get_requests(f"{prefix}/model.safetensors") == 1
    assert s3_server.get_requests(f"{prefix}/pytorch_model.bin") == 0
    missing = subprocess.run(
        [*command[:4], f"s3://{bucket}/models/absent/", str(tmp_path / "volume")],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("nora fetch-model: error: baseModel.uri: ")
