"""HF config.json -> ModelArch: the dense Qwen3 family is accepted, anything else is named and refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megatron_grpo.config import ConfigError
from megatron_grpo.model.arch import arch_from_dict, load_arch, padded_vocab_size
from tests.model.tiny import tiny_hf_config

CONFIGS = Path(__file__).resolve().parents[3] / "shared" / "data" / "configs"


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
    ({"architectures": ["Qwen3MoeForCausalLM"]}, "field 'architectures' = 'Qwen3MoeForCausalLM' is not supported"),
    ({"num_experts": 128}, "field 'num_experts' = 128 is not supported"),
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
