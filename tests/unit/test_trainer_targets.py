"""``adapter.targetModules`` on real architectures: all-linear, fused projections, MoE experts, bad names.

Models are built in memory from transformers configs (``tests.support.tiny_models``); nothing trains here.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, MixtralConfig

from nora.trainer.errors import TrainerInputError
from nora.trainer.irpo_config import AdapterRef
from nora.trainer.targets import resolve_targets, routed_experts
from tests.support.tiny_models import model_config, train_bpe_tokenizer

DEFAULT = AdapterRef().target_modules


def tiny(architecture: str) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(model_config(architecture, train_bpe_tokenizer()))


def tiny_mixtral() -> torch.nn.Module:
    config = MixtralConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_local_experts=4,
        num_experts_per_tok=2,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return AutoModelForCausalLM.from_config(config)


def test_the_default_adapts_phi3s_fused_attention_and_says_so() -> None:
    targets = resolve_targets(tiny("phi3"), DEFAULT)
    assert targets.names == ("o_proj", "qkv_proj")
    assert sorted(targets.shapes) == [
        f"model.layers.{layer}.self_attn.{name}" for layer in (0, 1) for name in ("o_proj", "qkv_proj")
    ]
    assert targets.shapes["model.layers.0.self_attn.qkv_proj"] == (32 + 2 * 16, 32)  # 2 q heads, 1 kv head
    assert targets.notes == (
        "adapter.targetModules: this model fuses q_proj, k_proj, v_proj into qkv_proj; adapting qkv_proj",
    )
    mlp = resolve_targets(tiny("phi3"), ("gate_proj", "up_proj", "down_proj"))
    assert mlp.names == ("down_proj", "gate_up_proj")


def test_a_partial_fused_request_is_refused_with_the_linear_names() -> None:
    with pytest.raises(TrainerInputError) as error:
        resolve_targets(tiny("phi3"), ("q_proj", "o_proj"))
    assert str(error.value) == (
        "adapter.targetModules: q_proj matches no module of the base model; its Linear modules are: "
        "down_proj, gate_up_proj, o_proj, qkv_proj (or use all-linear)"
    )


def test_all_linear_is_every_linear_module_but_the_output_layer() -> None:
    model = tiny("llama")
    targets = resolve_targets(model, ("all-linear",))
    assert len(targets.names) == 2 * 7
    assert "lm_head" not in targets.names
    assert targets.names == tuple(sorted(targets.shapes))
    assert targets.shapes["model.layers.1.mlp.down_proj"] == (32, 64)


def test_all_linear_on_a_model_without_linear_modules_is_refused() -> None:
    with pytest.raises(TrainerInputError, match=r"adapter\.targetModules: this model has no Linear module"):
        resolve_targets(torch.nn.Sequential(torch.nn.Embedding(4, 2)), ("all-linear",))


def test_a_name_of_a_module_that_is_not_linear_is_refused() -> None:
    with pytest.raises(
        TrainerInputError, match=r"adapter\.targetModules: mlp names model\.layers\.0\.mlp, a "
    ):
        resolve_targets(tiny("llama"), ("q_proj", "mlp"))


def test_mixtral_experts_are_refused_naming_what_exists() -> None:
    model = tiny_mixtral()
    assert routed_experts(model) == [
        "model.layers.*.mlp.experts.down_proj",
        "model.layers.*.mlp.experts.gate_up_proj",
    ]
    with pytest.raises(TrainerInputError) as error:
        resolve_targets(model, ("w1", "w2", "w3"))
    message = str(error.value)
    assert message.startswith("adapter.targetModules: w1, w2, w3 match no module of the base model; ")
    assert "its Linear modules are: k_proj, o_proj, q_proj, v_proj" in message
    assert (
        "routed experts (model.layers.*.mlp.experts.down_proj, model.layers.*.mlp.experts.gate_up_proj)"
        in message
    )
    assert "target_parameters is not supported" in message
    assert resolve_targets(model, DEFAULT).names == ("k_proj", "o_proj", "q_proj", "v_proj")


def test_qwen2_moe_shared_expert_only_when_named_explicitly() -> None:
    model = tiny("qwen2_moe")
    with pytest.raises(
        TrainerInputError, match=r"down_proj reaches only model\.layers\.0\.mlp\.shared_expert\.down_proj"
    ):
        resolve_targets(model, ("down_proj",))
    explicit = resolve_targets(model, ("shared_expert.down_proj", "mlp.shared_expert_gate"))
    assert sorted(explicit.shapes) == [
        f"model.layers.{layer}.mlp.{name}"
        for layer in (0, 1)
        for name in ("shared_expert.down_proj", "shared_expert_gate")
    ]


@pytest.mark.parametrize(
    ("modules", "message"),
    [
        (("all-linear", "q_proj"), "all-linear stands alone"),
        (("q_proj", "lm_head"), "must not contain lm_head"),
    ],
)
def test_adapter_settings_refuse_mixed_all_linear_and_lm_head(modules: tuple[str, ...], message: str) -> None:
    with pytest.raises(TrainerInputError, match=rf"adapter\.targetModules: {message}"):
        AdapterRef(target_modules=modules)
