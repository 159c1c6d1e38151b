"""``toy://`` URIs: the project's own toy model and data, built on first use (cached), for demos and tests.

* ``toy://arithmetic[?seed=N]``: the toy base model (Hugging Face format);
* ``toy://arithmetic/train[?seed=N]``, ``toy://arithmetic/eval[?seed=N]`` and ``toy://arithmetic/test[?seed=N]``:
  the toy task's JSONL splits (the test split is disjoint from both others).

They resolve to ``file://`` URIs in one shared folder (under the toy cache), so trainers see ordinary
local files and two runs of one manifest record the same base-model path in their adapters.
Cluster runs use ``hf://``, ``s3://`` or ``file://`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

TOY_TASK = "arithmetic"
TOY_TEST_ROWS = 1000
"""Rows of ``toy://arithmetic/test``: enough that one seed's sampling error is about 1.5 points."""


class ToyUriError(ValueError):
    """A ``toy://`` URI that names nothing we can build."""


@dataclass
class ToyResolver:
    """Resolves ``toy://`` URIs into ``root`` (other URIs pass through unchanged)."""

    root: Path
    resolved: dict[str, str] = field(default_factory=dict)

    def __call__(self, uri: str) -> str:
        if not uri.startswith("toy://"):
            return uri
        if uri not in self.resolved:
            self.resolved[uri] = self._build(uri)
        return self.resolved[uri]

    def _build(self, uri: str) -> str:
        parsed = urlparse(uri)
        seed_values = parse_qs(parsed.query).get("seed", ["0"])
        if parsed.netloc != TOY_TASK or not seed_values[0].isdigit():
            raise ToyUriError(f"{uri}: unknown toy URI; use toy://{TOY_TASK}[/train|/eval|/test][?seed=N]")
        seed = int(seed_values[0])
        split = parsed.path.strip("/")
        if split == "":
            from nora.toy.model import build_toy_model

            return build_toy_model(self.root / f"model-seed{seed}", seed=seed).resolve().as_uri()
        if split in ("train", "eval", "test"):
            from nora.toy.data import write_dataset

            folder = self.root / f"data-seed{seed}"
            if not (folder / f"{split}.jsonl").exists():
                write_dataset(folder, seed=seed, n_test=TOY_TEST_ROWS)
            return (folder / f"{split}.jsonl").resolve().as_uri()
        raise ToyUriError(f"{uri}: unknown toy split {split!r}; use /train, /eval or /test")
