"""The model families: HF config.json -> ModelArch for Qwen3, Qwen2 and Qwen3-MoE (anything else named
and refused), and each family's HF layout and parameter counts against transformers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from megatron_grpo.config import ConfigError
from megatron_grpo.families import FAMILIES, arch_from_dict, hf_layout, load_arch, padded_vocab_size, param_counts
from tests.model.tiny import hf_model, hf_state_dict, tiny_hf_config, tiny_moe_config, tiny_qwen2_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "models"


@pytest.mark.parametrize("name", ["qwen3-0.6b-base", "qwen3-1.7b-base", "qwen3-4b-base"])
def test_shipped_qwen3_configs_parse(name):
    arch = load_arch(CONFIGS / f"{name}.config.json")
    raw = json.loads((CONFIGS / f"{name}.config.json").read_text())
    assert (arch.hidden_size, arch.num_layers, arch.num_query_groups) == (
        raw["hidden_size"], raw["num_hidden_layers"], raw["num_key_value_heads"])
    assert arch.tie_word_embeddings and arch.qk_layernorm and arch.rope_theta == 1_000_000


def test_transformers5_rope_parameters_are_read():
    cfg = {**tiny_hf_config(), "rope_parameters": {"rope_theta": 5e5, "rope_type": "default"}}
    cfg.pop("rope_theta")
    assert arch_from_dict(cfg).rope_theta == 5e5


@pytest.mark.parametrize(("change", "message"), [
    ({"architectures": ["LlamaForCausalLM"]}, "field 'architectures' = 'LlamaForCausalLM' is not supported"),
    ({"num_experts": 128}, "field 'num_experts' = 128 is not supported"),
    ({"attention_bias": True}, "field 'attention_bias' = True is not supported"),
    ({"rope_scaling": {"type": "yarn", "factor": 4}}, "field 'rope_scaling'"),
    ({"use_sliding_window": True}, "field 'use_sliding_window'"),
    ({"hidden_act": "gelu"}, "field 'hidden_act' = 'gelu'"),
    ({"num_key_value_heads": None}, "missing required field 'num_key_value_heads'"),
    ({"architectures": []}, "missing field 'architectures'"),
])
def test_unsupported_or_incomplete_configs_name_the_field(change, message):
    with pytest.raises(ConfigError) as err:
        arch_from_dict({**tiny_hf_config(), **change}, "cfg.json")
    assert message in str(err.value) and "cfg.json" in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="model config not found"):
        load_arch(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_arch(tmp_path)


def test_vocab_padding_is_the_same_for_every_power_of_two_tp():
    assert {padded_vocab_size(151936, 128, tp) for tp in (1, 2, 4, 8)} == {151936}
    assert {padded_vocab_size(250, 128, tp) for tp in (1, 2, 4, 8)} == {256}
    assert padded_vocab_size(100, 8, 3) == 120  # lcm(8, 3) = 24


@pytest.mark.parametrize(("change", "message"), [
    ({"decoder_sparse_step": 2}, "field 'decoder_sparse_step' = 2"),
    ({"mlp_only_layers": [0]}, "field 'mlp_only_layers' = [0]"),
    ({"num_experts_per_tok": 5}, "field 'num_experts_per_tok' = 5"),
    ({"moe_intermediate_size": None}, "missing required field 'moe_intermediate_size'"),
])
def test_moe_configs_name_what_is_not_supported(change, message):
    with pytest.raises(ConfigError, match="cfg.json") as err:
        arch_from_dict({**tiny_moe_config(), **change}, "cfg.json")
    assert message in str(err.value)


def test_qwen3_moe_reads_either_expert_count_name():
    """transformers >= 5 writes ``num_local_experts``; older configs (the Hub's) say ``num_experts``."""
    config = tiny_moe_config()
    renamed = {**config, "num_local_experts": config.pop("num_experts")}
    assert arch_from_dict(renamed).num_experts == arch_from_dict(tiny_moe_config()).num_experts == 4


def test_30b_a3b_counts_match_transformers():
    """The family's layout counts what transformers builds (on meta: no memory): 30.5B in all, ~3.3B
    active per token (8 of 128 experts)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = CONFIGS / "qwen3-30b-a3b-base.config.json"
    arch = load_arch(path)
    assert (arch.num_experts, arch.moe_topk, arch.norm_topk_prob) == (128, 8, True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    counts = param_counts(arch)
    assert counts.total(arch) == sum(p.numel() for p in model.parameters()) == sum(
        math.prod(s) for s in hf_layout(arch).values())
    assert 3.0e9 < counts.active(arch) < 3.6e9


@pytest.mark.parametrize("config", [tiny_hf_config(tie=False), tiny_qwen2_config(), tiny_moe_config()],
                         ids=["qwen3", "qwen2", "qwen3_moe"])
def test_layout_is_what_save_pretrained_writes(config):
    """Names and shapes, in every family, are the checkpoint's: what conversion writes and reads."""
    written = hf_state_dict(hf_model(config), tie=config["tie_word_embeddings"])
    assert {k: tuple(v.shape) for k, v in written.items()} == hf_layout(arch_from_dict(config))


def test_every_family_is_registered_once_by_its_architecture():
    assert set(FAMILIES) == {"Qwen3ForCausalLM", "Qwen2ForCausalLM", "Qwen3MoeForCausalLM"}
    assert all(name == fam.architecture for name, fam in FAMILIES.items())
    from megatron_grpo.families import register

    with pytest.raises(ValueError, match="registered twice"):
        register(FAMILIES["Qwen2ForCausalLM"])


@pytest.mark.parametrize("config", [tiny_qwen2_config(), tiny_moe_config()], ids=["qwen2", "qwen3_moe"])
def test_layout_order_is_the_order_megatron_streams(config):
    """A refit checks each streamed tensor against the layout in order; Megatron emits a fused tensor's
    parts together (q, k, v weights, then their biases) and a routed expert's tensors together."""
    from megatron_grpo.convert.mapping import match_mcore, rules_for

    arch = arch_from_dict(config)
    names = list(hf_layout(arch))
    rules = rules_for(arch)
    fused = ["decoder.layers.0.self_attention.linear_qkv.weight", "decoder.layers.0.self_attention.linear_qkv.bias",
             "decoder.layers.0.mlp.experts.local_experts.1.linear_fc1.weight"]
    for mcore in fused:
        try:
            parts = match_mcore(mcore, rules).hf_names
        except KeyError:
            continue  # not this family's parameter
        start = names.index(parts[0])
        assert names[start:start + len(parts)] == list(parts), mcore
    if arch.is_moe:
        expert = "model.layers.0.mlp.experts.1."
        start = names.index(expert + "gate_proj.weight")
        projections = ("gate_proj.weight", "up_proj.weight", "down_proj.weight")
        assert names[start:start + 3] == [expert + p for p in projections]
