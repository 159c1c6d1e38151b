"""Base models and adapters in the trainer: model URIs, fresh adapters, adapters that do not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from nora.genetics import derive_seed, init_genome, make_generator
from nora.toy.tokenizer import build_tokenizer, toy_alphabet
from nora.trainer import models
from nora.trainer.errors import TrainerInputError
from nora.trainer.irpo_config import AdapterRef, BaseModelRef
from nora.trainer.targets import resolve_targets


def build_tiny_llama(folder: Path, hidden: int = 32) -> Path:
    """A randomly initialised one-layer Llama with the toy character tokenizer, saved in HF format."""
    tokenizer = build_tokenizer(toy_alphabet([]), 128)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny"))


def test_model_uris_resolve_to_where_from_pretrained_reads(tmp_path: Path, tiny: Path) -> None:
    assert models.resolve_model("hf://org/name@v1.0") == models.ModelSource("org/name", "v1.0", False)
    assert models.resolve_model("hf://org/name").revision is None
    assert models.resolve_model(tiny.as_uri()) == models.ModelSource(str(tiny), None, True)
    assert models.resolve_model(str(tiny)).local
    with pytest.raises(TrainerInputError, match="toy:// is resolved"):
        models.resolve_model("toy://default")
    with pytest.raises(TrainerInputError, match="not a model folder"):
        models.resolve_model((tmp_path / "absent").as_uri())
    with pytest.raises(TrainerInputError, match="names no model"):
        models.resolve_model("hf://")


def test_a_folder_with_only_pickled_weights_is_refused(tmp_path: Path, tiny: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((tiny / name).read_bytes())
    torch.save(AutoModelForCausalLM.from_pretrained(tiny).state_dict(), folder / "pytorch_model.bin")
    source = models.resolve_model(str(folder))
    with pytest.raises(TrainerInputError, match=r"baseModel\.uri: cannot load"):
        models.load_base_model(source, BaseModelRef(uri=str(folder)))


def test_fresh_adapter_is_seeded_and_covers_the_target_modules(tiny: Path) -> None:
    base = AutoModelForCausalLM.from_pretrained(tiny)
    adapter = AdapterRef(rank=3, alpha=6.0, target_modules=("q_proj", "o_proj"))
    targets = resolve_targets(base, adapter.target_modules)
    genome = models.fresh_genome(targets, adapter, seed=9, base_uri="file:///m")
    assert sorted(genome.modules) == ["model.layers.0.self_attn.o_proj", "model.layers.0.self_attn.q_proj"]
    assert all(m.rank == 3 and float(m.b.abs().max()) == 0.0 for m in genome.modules.values())
    again = models.fresh_genome(targets, adapter, seed=9, base_uri="file:///m")
    assert all(torch.equal(genome.modules[n].a, again.modules[n].a) for n in genome.modules)
    expected = init_genome(
        resolve_targets(base, ("q_proj", "o_proj")).shapes,
        3,
        6.0,
        make_generator(derive_seed(9, "fresh-adapter")),
    )
    assert all(torch.equal(genome.modules[n].a, expected.modules[n].a) for n in genome.modules)
    assert genome.config["target_modules"] == ["o_proj", "q_proj"]
    with pytest.raises(TrainerInputError, match="gate_projj matches no module"):
        resolve_targets(base, ("q_proj", "gate_projj"))


def test_an_adapter_for_another_base_model_is_refused(tmp_path: Path, tiny: Path) -> None:
    other = build_tiny_llama(tmp_path / "wider", hidden=48)
    wide_base = AutoModelForCausalLM.from_pretrained(other)
    foreign = init_genome(
        resolve_targets(wide_base, ("q_proj",)).shapes,
        2,
        4.0,
        make_generator(0),
        config={"target_modules": ["q_proj"]},
    )
    base = AutoModelForCausalLM.from_pretrained(tiny)
    with pytest.raises(TrainerInputError, match=r"adapter\.uri"):
        models.attach_genome(base, foreign, 0.0, tmp_path)


def test_attached_adapter_round_trips_and_trains_only_default(tmp_path: Path, tiny: Path) -> None:
    base = AutoModelForCausalLM.from_pretrained(tiny)
    start = init_genome(
        resolve_targets(base, ("v_proj",)).shapes,
        2,
        4.0,
        make_generator(1),
        b_std=0.1,
        config={"target_modules": ["v_proj"]},
    )
    model = models.attach_genome(base, start, 0.0, tmp_path)
    back = models.extract_genome(model, start)
    assert all(torch.equal(back.modules[n].b, start.modules[n].b) for n in start.modules)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable
    assert all(".default." in name for name in trainable)


def test_adapter_config_names_the_base_model_as_peft_loads_it() -> None:
    assert models.base_model_reference("hf://org/name@abc") == {
        "base_model_name_or_path": "org/name",
        "revision": "abc",
    }
    assert models.base_model_reference("file:///models/my%20llama") == {
        "base_model_name_or_path": "/models/my llama"
    }
    assert models.base_model_reference("/models/x") == {"base_model_name_or_path": "/models/x"}
    assert models.base_model_reference("s3://b/k/") == {"base_model_name_or_path": "s3://b/k/"}
