"""The mapping table serves both layer specs: Megatron's local names and Transformer Engine's fused-norm names."""

from __future__ import annotations

import pytest

from megatron_grpo.convert.mapping import MappingError, match_mcore, rules_for
from megatron_grpo.families import arch_from_dict
from tests.model.tiny import tiny_hf_config

NORMS = {  # Megatron name (local spec / TE spec) -> HF name
    "decoder.layers.3.input_layernorm.weight": "model.layers.3.input_layernorm.weight",
    "decoder.layers.3.self_attention.linear_qkv.layer_norm_weight": "model.layers.3.input_layernorm.weight",
    "decoder.layers.3.pre_mlp_layernorm.weight": "model.layers.3.post_attention_layernorm.weight",
    "decoder.layers.3.mlp.linear_fc1.layer_norm_weight": "model.layers.3.post_attention_layernorm.weight",
}


@pytest.mark.parametrize("name", list(NORMS))
def test_local_and_te_norm_names_map_to_the_same_hf_tensor(name):
    rules = rules_for(arch_from_dict(tiny_hf_config()))
    assert match_mcore(name, rules).hf_names == (NORMS[name],)


def test_unknown_megatron_name_is_an_error():
    rules = rules_for(arch_from_dict(tiny_hf_config()))
    with pytest.raises(MappingError, match="'decoder.layers.0.mlp.router.weight' has no HF mapping"):
        match_mcore("decoder.layers.0.mlp.router.weight", rules)
