"""Frozen configurations of the toy model build (standard library only, so they import instantly)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Progress = Callable[[int, int, float], None]
"""Called as ``progress(step, steps, loss)`` every 50 pre-training steps and after the last one."""


@dataclass(frozen=True)
class ToyModelConfig:
    """Shape of the tiny Llama model."""

    hidden_size: int = 96
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    max_position_embeddings: int = 256
    rope_theta: float = 10000.0


@dataclass(frozen=True)
class ToyTrainConfig:
    """Pre-training budget and optimiser settings."""

    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    pool_size: int = 16_000
    num_threads: int = 1
    direct_answer_fraction: float = 0.5
    """Share of pre-training examples whose completion is only the final line ``#### <answer>``."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.direct_answer_fraction < 1.0:
            raise ValueError(
                f"direct_answer_fraction must be in [0, 1), got {self.direct_answer_fraction}: "
                "some examples must show the worked solution"
            )


@dataclass(frozen=True)
class ToyEvalConfig:
    """Where the build measures its greedy accuracy: the eval split of the toy dataset for ``data_seed``."""

    data_seed: int = 0
    rows: int = 200
    max_new_tokens: int | None = None
    """Generation budget per answer; None means the longest gold solution plus 8 tokens."""


DEFAULT_MODEL = ToyModelConfig()
DEFAULT_TRAIN = ToyTrainConfig()
DEFAULT_EVAL = ToyEvalConfig()
