"""Real client: offspring of mixed-rank adapters load in PEFT and compute W x + s B A x.

The base is a tiny randomly initialised Llama built from a config here (no downloads). Parents are made
by PEFT itself (``get_peft_model`` with ``rank_pattern``), so the test also proves we read PEFT's format.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from nora.genetics import (
    CrossoverMethod,
    CrossoverSpec,
    MutationSpec,
    breed,
    load_genome,
    make_generator,
    save_genome,
)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def base_model() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    return model.eval()


def peft_parent(base: LlamaForCausalLM, folder: Path, rank_pattern: dict[str, int], seed: int) -> Path:
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=TARGETS, rank_pattern=rank_pattern, lora_dropout=0.0
    )
    model = get_peft_model(copy.deepcopy(base), config)
    generator = make_generator(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    model.save_pretrained(str(folder))
    return folder


def hand_merged(base: LlamaForCausalLM, adapter: Path) -> LlamaForCausalLM:
    """A copy of the base whose weights are ``W + scale * B @ A``, computed from the saved factors."""
    genome = load_genome(adapter)
    merged = copy.deepcopy(base)
    modules = dict(merged.named_modules())
    with torch.no_grad():
        for name, module in genome.items():
            modules[name].weight += module.scale(genome.use_rslora) * (module.b.float() @ module.a.float())
    return merged


@pytest.mark.parametrize("method", ["nora", "svd", "linear"])
def test_offspring_loads_in_peft_and_matches_the_hand_computed_forward(
    method: CrossoverMethod, base_model: LlamaForCausalLM, tmp_path: Path
) -> None:
    first = peft_parent(base_model, tmp_path / "p1", {"q_proj": 8, "layers.1.mlp.down_proj": 2}, seed=1)
    second = peft_parent(base_model, tmp_path / "p2", {"v_proj": 6}, seed=2)
    parents = [load_genome(first), load_genome(second)]
    assert parents[0].ranks["model.layers.0.self_attn.q_proj"] == 8
    assert parents[0].ranks["model.layers.1.mlp.down_proj"] == 2
    mutation = MutationSpec(sigma=0.01, grow_probability=0.5, shrink_probability=0.3, max_rank=10)
    child = breed(
        parents, [0.4, 0.6], CrossoverSpec(method=method), mutation, make_generator(3), make_generator(4)
    )
    assert len(set(child.ranks.values())) > 1, "the offspring should keep per-module ranks"
    out = save_genome(child, tmp_path / "child")

    peft_model = PeftModel.from_pretrained(copy.deepcopy(base_model), out).eval()
    for name, module in child.items():
        lora_layer = peft_model.get_submodule(f"base_model.model.{name}")
        assert lora_layer.r["default"] == module.rank, name
        assert lora_layer.scaling["default"] == pytest.approx(module.scale(False)), name

    tokens = torch.tensor([[1, 5, 9, 13, 17, 21, 25, 29]])
    with torch.no_grad():
        peft_logits = peft_model(tokens).logits
        reference = hand_merged(base_model, out)(tokens).logits
        base_logits = base_model(tokens).logits
    assert torch.allclose(peft_logits, reference, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(peft_logits, base_logits, atol=1e-3), "the adapter must change the output"


def test_one_lora_layer_computes_w_x_plus_scaled_b_a_x(base_model: LlamaForCausalLM, tmp_path: Path) -> None:
    parent = peft_parent(base_model, tmp_path / "p", {"o_proj": 3}, seed=5)
    genome = load_genome(parent)
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base_model), parent).eval()
    name = "model.layers.1.self_attn.o_proj"
    module = genome.modules[name]
    x = torch.randn(5, module.in_features, generator=make_generator(6))
    weight = base_model.get_submodule(name).weight
    expected = x @ weight.T + module.scale(False) * (x @ module.a.T) @ module.b.T
    with torch.no_grad():
        actual = peft_model.get_submodule(f"base_model.model.{name}")(x)
    assert torch.allclose(actual, expected, atol=1e-5)
