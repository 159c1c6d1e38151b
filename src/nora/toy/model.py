"""Build, cache and evaluate the toy base model.

:func:`build_toy_model` pre-trains a tiny Llama model with a character-level tokenizer on the toy task
and saves both in Hugging Face format (safetensors) with a ``nora-toy.json`` describing the build. The
result is cached under ``$NORA_CACHE_DIR/toy/<key>`` (default ``~/.cache/nora``), keyed by the generator
version, the configs, the seed and the torch/transformers minor versions; it is trained in a temporary
directory renamed into place, so an interrupted build never leaves a half-written cache entry. A second
call copies the cached files (or does nothing when the target already holds the same key).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from nora.api.defaults import DEFAULT_ANSWER_PATTERN, DEFAULT_PROMPT_TEMPLATE
from nora.toy.data import (
    DEFAULT_TASK,
    GENERATOR_VERSION,
    Row,
    ToyTaskConfig,
    extract_answer,
    generate_rows,
    iter_rows,
)
from nora.toy.pretrain import (
    DEFAULT_MODEL,
    DEFAULT_TRAIN,
    ToyModelConfig,
    ToyTrainConfig,
    encode_rows,
    init_model,
    llama_config,
    pretrain,
)
from nora.toy.tokenizer import build_tokenizer, toy_alphabet

INFO_FILE = "nora-toy.json"
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)
Progress = Callable[[int, int, float], None]
"""Called as ``progress(step, steps, loss)`` every few pre-training steps."""


@dataclass(frozen=True)
class ToyEvalConfig:
    """Where the build measures its greedy accuracy: the eval split of the toy dataset for ``data_seed``."""

    data_seed: int = 0
    rows: int = 200


DEFAULT_EVAL = ToyEvalConfig()


@dataclass(frozen=True)
class ToyModelInfo:
    """What ``nora-toy.json`` records about a build."""

    key: str
    seed: int
    eval_accuracy: float
    eval_rows: int
    final_loss: float
    train_seconds: float


def cache_root() -> Path:
    """``$NORA_CACHE_DIR`` or ``~/.cache/nora``."""
    configured = os.environ.get("NORA_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "nora"


def _minor(version: str) -> str:
    return ".".join(version.split("+", maxsplit=1)[0].split(".")[:2])


def cache_key(
    seed: int, model: ToyModelConfig, train: ToyTrainConfig, task: ToyTaskConfig, evaluation: ToyEvalConfig
) -> str:
    """A short hash of everything that determines the built model's bytes."""
    payload: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "model": dataclasses.asdict(model),
        "train": dataclasses.asdict(train),
        "task": dataclasses.asdict(task),
        "eval": dataclasses.asdict(evaluation),
        "torch": _minor(torch.__version__),
        "transformers": _minor(transformers.__version__),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def read_toy_info(model_dir: Path) -> ToyModelInfo | None:
    """The build record of a toy model directory, or None when it has none (or an unreadable one)."""
    try:
        raw = json.loads((model_dir / INFO_FILE).read_text(encoding="utf-8"))
        fields = {field.name for field in dataclasses.fields(ToyModelInfo)}
        return ToyModelInfo(**{name: raw[name] for name in fields})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_complete(model_dir: Path, key: str) -> bool:
    info = read_toy_info(model_dir)
    return info is not None and info.key == key and all((model_dir / f).is_file() for f in MODEL_FILES)


def load_toy_model(model_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model directory the way any Hugging Face model is loaded (no network)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    model.eval()
    return model, tokenizer


def generate_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    *,
    samples: int = 1,
    temperature: float = 0.0,
    batch_size: int = 64,
) -> list[list[str]]:
    """``samples`` completions per prompt: greedy when ``temperature`` is 0, else sampled (global RNG)."""
    sampling: dict[str, Any] = {"do_sample": False}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    results: list[list[str]] = []
    for start in range(0, len(prompts), batch_size):
        batch = list(prompts[start : start + batch_size])
        encoded = tokenizer(batch, return_tensors="pt", padding=True, padding_side="left")
        with torch.no_grad():
            output = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                num_return_sequences=samples,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
        texts = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
        results.extend(texts[i : i + samples] for i in range(0, len(texts), samples))
    return results


def _max_new_tokens(tokenizer: PreTrainedTokenizerBase, rows: Sequence[Row]) -> int:
    lengths = tokenizer([row["solution"] for row in rows], add_special_tokens=False)["input_ids"]
    return max(len(ids) for ids in lengths) + 8


def _prompts(rows: Sequence[Row]) -> list[str]:
    return [DEFAULT_PROMPT_TEMPLATE.format(question=row["question"]) for row in rows]


def accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: Sequence[Row]) -> float:
    """Greedy exact-match accuracy of ``model`` on ``rows`` (answers extracted with the default pattern)."""
    if not rows:
        raise ValueError("no rows to evaluate")
    completions = generate_completions(model, tokenizer, _prompts(rows), _max_new_tokens(tokenizer, rows))
    hits = sum(
        extract_answer(c[0], DEFAULT_ANSWER_PATTERN) == row["answer"]
        for c, row in zip(completions, rows, strict=True)
    )
    return hits / len(rows)


def evaluate_accuracy(model_dir: Path, rows: Sequence[Row]) -> float:
    """Greedy exact-match accuracy of the model saved in ``model_dir`` on ``rows``."""
    model, tokenizer = load_toy_model(model_dir)
    return accuracy(model, tokenizer, rows)


def mixed_sample_fraction(
    model_dir: Path, rows: Sequence[Row], samples: int = 8, temperature: float = 1.0, seed: int = 0
) -> float:
    """Fraction of prompts whose ``samples`` sampled answers include both a correct and an incorrect one."""
    model, tokenizer = load_toy_model(model_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        completions = generate_completions(
            model,
            tokenizer,
            _prompts(rows),
            _max_new_tokens(tokenizer, rows),
            samples=samples,
            temperature=temperature,
            batch_size=max(1, 256 // samples),
        )
    mixed = 0
    for group, row in zip(completions, rows, strict=True):
        correct = {extract_answer(text) == row["answer"] for text in group}
        mixed += correct == {True, False}
    return mixed / len(rows)


def _save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.max_length = model.config.max_position_embeddings
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def _train_into(
    out_dir: Path,
    seed: int,
    configs: tuple[ToyModelConfig, ToyTrainConfig, ToyTaskConfig, ToyEvalConfig],
    key: str,
    progress: Progress | None,
) -> ToyModelInfo:
    """Pre-train, evaluate and save one toy model (with its ``nora-toy.json``) into ``out_dir``."""
    model_config, train, task, evaluation = configs
    started = time.monotonic()
    tokenizer = build_tokenizer(toy_alphabet([DEFAULT_PROMPT_TEMPLATE]), model_config.max_position_embeddings)
    pool = list(itertools.islice(iter_rows(seed, "train", task, stream="pretrain"), train.pool_size))
    model = init_model(llama_config(model_config, tokenizer), seed)
    losses = pretrain(model, encode_rows(pool, tokenizer), train, seed, tokenizer.pad_token_id, progress)
    eval_rows = generate_rows(evaluation.data_seed, evaluation.rows, "eval", task)
    info = ToyModelInfo(
        key=key,
        seed=seed,
        eval_accuracy=accuracy(model, tokenizer, eval_rows),
        eval_rows=len(eval_rows),
        final_loss=sum(losses[-20:]) / max(1, len(losses[-20:])),
        train_seconds=round(time.monotonic() - started, 1),
    )
    _save(model, tokenizer, out_dir)
    (out_dir / INFO_FILE).write_text(json.dumps(dataclasses.asdict(info), indent=2) + "\n", encoding="utf-8")
    return info


def _build_cached(
    seed: int,
    configs: tuple[ToyModelConfig, ToyTrainConfig, ToyTaskConfig, ToyEvalConfig],
    progress: Progress | None,
) -> Path:
    """The cache directory of this build, training it first (atomically) when it is missing."""
    key = cache_key(seed, *configs)
    final = cache_root() / "toy" / key
    if _is_complete(final, key):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
    try:
        _train_into(scratch, seed, configs, key, progress)
        if final.exists():  # a broken leftover, or another process finished first
            if _is_complete(final, key):
                return final
            shutil.rmtree(final)
        scratch.rename(final)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return final


def build_toy_model(
    out_dir: Path,
    seed: int = 0,
    model: ToyModelConfig = DEFAULT_MODEL,
    train: ToyTrainConfig = DEFAULT_TRAIN,
    task: ToyTaskConfig = DEFAULT_TASK,
    evaluation: ToyEvalConfig = DEFAULT_EVAL,
    progress: Progress | None = None,
) -> Path:
    """Make ``out_dir`` hold the toy model for these settings (from the cache when possible); return it."""
    configs = (model, train, task, evaluation)
    key = cache_key(seed, *configs)
    out_dir = Path(out_dir)
    if _is_complete(out_dir, key):
        return out_dir
    cached = _build_cached(seed, configs, progress)
    if out_dir.resolve() == cached.resolve():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / INFO_FILE).unlink(missing_ok=True)
    for name in MODEL_FILES:
        shutil.copyfile(cached / name, out_dir / name)
    shutil.copyfile(cached / INFO_FILE, out_dir / INFO_FILE)  # last: marks the copy complete
    return out_dir
