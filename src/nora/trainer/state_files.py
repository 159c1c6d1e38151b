"""Training state as safetensors + JSON, never pickle: optimizer and scheduler state dicts and RNG states.

:func:`encode` splits a nested state (dicts, lists, tuples, numbers, strings, tensors) into a tensor table
for ``safetensors`` and a JSON document in which each tensor is ``{"__tensor__": name}``; dicts with
non-string keys (an optimizer's per-parameter state is keyed by int) are ``{"__items__": [[key, value],
...]}`` so :func:`decode` gives back exactly the original structure. :func:`capture_rng` and
:func:`restore_rng` do the same for the Python, NumPy, torch CPU and CUDA generators.
"""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import torch
from safetensors.torch import load, save

TENSOR, ITEMS, TUPLE = "__tensor__", "__items__", "__tuple__"


def encode(state: Any, tensors: dict[str, torch.Tensor], path: str = "s") -> Any:
    """``state`` as JSON-able data; its tensors are added to ``tensors`` (contiguous, on the CPU)."""
    if isinstance(state, torch.Tensor):
        tensors[path] = state.detach().cpu().contiguous()
        return {TENSOR: path}
    if isinstance(state, dict):
        if all(isinstance(key, str) for key in state):
            return {key: encode(value, tensors, f"{path}.{key}") for key, value in state.items()}
        return {ITEMS: [[key, encode(value, tensors, f"{path}.{key}")] for key, value in state.items()]}
    if isinstance(state, tuple):
        return {TUPLE: [encode(value, tensors, f"{path}.{i}") for i, value in enumerate(state)]}
    if isinstance(state, list):
        return [encode(value, tensors, f"{path}.{i}") for i, value in enumerate(state)]
    if state is None or isinstance(state, bool | int | float | str):
        return state
    raise TypeError(f"cannot store {type(state).__name__} at {path} without pickle")


def decode(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(data, list):
        return [decode(value, tensors) for value in data]
    if not isinstance(data, dict):
        return data
    if set(data) == {TENSOR}:
        return tensors[data[TENSOR]]
    if set(data) == {ITEMS}:
        return {key: decode(value, tensors) for key, value in data[ITEMS]}
    if set(data) == {TUPLE}:
        return tuple(decode(value, tensors) for value in data[TUPLE])
    return {key: decode(value, tensors) for key, value in data.items()}


def dump(state: Any) -> tuple[bytes, bytes]:
    """``state`` as (safetensors bytes, JSON bytes)."""
    tensors: dict[str, torch.Tensor] = {}
    document = encode(state, tensors)
    return save(tensors), (json.dumps(document, sort_keys=True) + "\n").encode()


def undump(tensor_bytes: bytes, json_bytes: bytes) -> Any:
    """The state :func:`dump` wrote."""
    return decode(json.loads(json_bytes), load(tensor_bytes))


def capture_rng() -> dict[str, Any]:
    """The Python, NumPy, torch CPU and (when present) CUDA generator states."""
    name, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), position, has_gauss, gauss),
        "cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set every generator :func:`capture_rng` recorded (CUDA only when both sides have it)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.random.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
