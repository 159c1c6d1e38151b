"""Genome I/O: PEFT adapter folders round-trip, manifests are verified, bad input is named."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nora.genetics import GeneticsError, GenomeFormatError, IncompatibleParentsError, load_genome, save_genome
from nora.genetics.crossover import CrossoverSpec, crossover
from nora.genetics.io import (
    CONFIG_FILE,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    _resolve_pattern,
    adapter_config,
    manifest_status,
)
from nora.genetics.rng import make_generator
from tests.unit.factories import SHAPES, random_genome

MIXED_RANKS = {"model.layers.0.self_attn.q_proj": 8, "model.layers.1.mlp.down_proj": 2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_keeps_factors_ranks_alpha_and_genes(tmp_path: Path, dtype: torch.dtype) -> None:
    genome = random_genome(1, rank=4, alpha=16.0, ranks=MIXED_RANKS, dtype=dtype)
    genome = genome.with_hyperparameters({"learning_rate": 2e-4, "beta": 0.1})
    save_genome(genome, tmp_path / "g")
    loaded = load_genome(tmp_path / "g")
    assert loaded.ranks == genome.ranks
    assert loaded.dtype == dtype
    assert loaded.hyperparameters == {"learning_rate": 2e-4, "beta": 0.1}
    for name, module in genome.items():
        assert torch.equal(loaded.modules[name].a, module.a)
        assert torch.equal(loaded.modules[name].b, module.b)
        assert loaded.modules[name].alpha == module.alpha


def test_config_uses_rank_and_alpha_patterns_for_the_odd_modules(tmp_path: Path) -> None:
    genome = random_genome(2, rank=4, ranks={"model.layers.0.self_attn.q_proj": 8})
    config = adapter_config(genome)
    assert config["r"] == 4
    assert config["peft_type"] == "LORA"
    assert config["rank_pattern"] == {r"model\.layers\.0\.self_attn\.q_proj": 8}
    assert config["alpha_pattern"] == {}
    assert config["target_modules"] == ["down_proj", "q_proj", "v_proj"]


def test_saving_twice_gives_identical_bytes(tmp_path: Path) -> None:
    genome = random_genome(3, ranks=MIXED_RANKS)
    save_genome(genome, tmp_path / "a")
    save_genome(genome, tmp_path / "b")
    for name in (CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_manifest_is_written_and_tampering_is_detected(tmp_path: Path) -> None:
    folder = save_genome(random_genome(4), tmp_path / "g")
    assert manifest_status(folder) == "ok"
    tensors = load_file(folder / WEIGHTS_FILE)
    first = sorted(tensors)[0]
    tensors[first] = tensors[first] + 1.0
    save_file(tensors, folder / WEIGHTS_FILE, metadata={"format": "pt"})
    with pytest.raises(GenomeFormatError, match=r"adapter_model\.safetensors: sha256 does not match"):
        load_genome(folder)


def test_existing_output_is_never_clobbered_without_overwrite(tmp_path: Path) -> None:
    first, second = random_genome(5), random_genome(6)
    save_genome(first, tmp_path / "g")
    with pytest.raises(GeneticsError, match="already exists"):
        save_genome(second, tmp_path / "g")
    assert torch.equal(
        load_genome(tmp_path / "g").modules[next(iter(SHAPES))].a, first.modules[next(iter(SHAPES))].a
    )
    save_genome(second, tmp_path / "g", overwrite=True)
    assert torch.equal(
        load_genome(tmp_path / "g").modules[next(iter(SHAPES))].a, second.modules[next(iter(SHAPES))].a
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


def test_missing_folder_and_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(GenomeFormatError, match="adapter folder does not exist"):
        load_genome(tmp_path / "nope")
    folder = save_genome(random_genome(7), tmp_path / "g")
    (folder / MANIFEST_FILE).unlink()
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(GenomeFormatError, match=rf"{WEIGHTS_FILE}: missing"):
        load_genome(folder)
    (folder / CONFIG_FILE).unlink()
    with pytest.raises(GenomeFormatError, match=rf"{CONFIG_FILE}: missing"):
        load_genome(folder)


class _Explodes:
    """Unpickling this would create a marker file: the test proves it never happens."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def test_pickled_weights_are_refused_and_never_unpickled(tmp_path: Path) -> None:
    folder = save_genome(random_genome(8), tmp_path / "g")
    (folder / MANIFEST_FILE).unlink()
    (folder / WEIGHTS_FILE).unlink()
    marker = tmp_path / "unpickled"
    (folder / "adapter_model.bin").write_bytes(pickle.dumps(_Explodes(marker)))
    with pytest.raises(GenomeFormatError, match=r"adapter_model\.bin: pickled weights are never loaded"):
        load_genome(folder)
    assert not marker.exists()


def test_non_safetensors_bytes_are_refused(tmp_path: Path) -> None:
    folder = save_genome(random_genome(9), tmp_path / "g")
    (folder / MANIFEST_FILE).unlink()
    (folder / WEIGHTS_FILE).write_bytes(b"PK\x03\x04 this is a zip, not safetensors")
    with pytest.raises(GenomeFormatError, match="not a readable safetensors file"):
        load_genome(folder)


def _rewrite_config(folder: Path, **changes: object) -> None:
    (folder / MANIFEST_FILE).unlink()
    config = json.loads((folder / CONFIG_FILE).read_text())
    config.update(changes)
    (folder / CONFIG_FILE).write_text(json.dumps(config))


def test_tensor_shapes_that_disagree_with_the_config_are_named(tmp_path: Path) -> None:
    folder = save_genome(random_genome(10, rank=4), tmp_path / "g")
    _rewrite_config(folder, r=8)
    with pytest.raises(GenomeFormatError, match=r"tensors have rank 4 but adapter_config.json .* says 8"):
        load_genome(folder)


def test_a_b_rank_mismatch_is_named(tmp_path: Path) -> None:
    folder = save_genome(random_genome(11, rank=4), tmp_path / "g")
    (folder / MANIFEST_FILE).unlink()
    tensors = load_file(folder / WEIGHTS_FILE)
    key = "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"
    tensors[key] = torch.zeros(8, 3)
    save_file(tensors, folder / WEIGHTS_FILE)
    with pytest.raises(GenomeFormatError, match=r"v_proj has A/B rank mismatch: lora_A is .* but lora_B is"):
        load_genome(folder)


def test_non_lora_tensors_and_invalid_json_are_named(tmp_path: Path) -> None:
    folder = save_genome(random_genome(12), tmp_path / "g")
    (folder / MANIFEST_FILE).unlink()
    tensors = load_file(folder / WEIGHTS_FILE)
    tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"] = torch.ones(24)
    save_file(tensors, folder / WEIGHTS_FILE)
    with pytest.raises(GenomeFormatError, match="is not a LoRA A/B weight"):
        load_genome(folder)
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(GenomeFormatError, match=r"adapter_config\.json: not valid JSON"):
        load_genome(folder)


def test_adapters_for_different_base_shapes_cannot_be_crossed() -> None:
    first = random_genome(13)
    shapes = dict(SHAPES)
    shapes["model.layers.0.self_attn.v_proj"] = (12, 16)
    second = random_genome(14, shapes=shapes)
    with pytest.raises(IncompatibleParentsError, match=r"v_proj: parent 0 adapts a \(8, 16\) weight"):
        crossover([first, second], None, CrossoverSpec(method="nora"), make_generator(0))
    third = random_genome(15, shapes={k: v for k, v in SHAPES.items() if "down" not in k})
    with pytest.raises(IncompatibleParentsError, match="adapt different modules"):
        crossover([first, third], None, CrossoverSpec(method="svd"), make_generator(0))


@pytest.mark.parametrize(
    "module",
    [
        "model.layers.0.self_attn.q_proj",
        "model.layers.10.self_attn.q_proj",
        "model.layers.1.mlp.up_proj",
        "q_proj",
    ],
)
def test_pattern_lookup_follows_peft_rule(module: str) -> None:
    from peft.utils.other import get_pattern_key

    patterns = {
        r"model\.layers\.0\.self_attn\.q_proj": 8,
        "up_proj": 2,
        r"layers\.1\d\.self_attn\.q_proj": 6,
        "model.layers.0.mlp.down_proj": 3,
    }
    expected = patterns.get(get_pattern_key(list(patterns), module), 4)
    assert _resolve_pattern(patterns, module, 4) == expected
