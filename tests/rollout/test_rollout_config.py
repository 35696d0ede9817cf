"""RolloutConfig / SamplingConfig validation."""

import pytest

from megatron_grpo.config.loader import ConfigError, from_dict
from megatron_grpo.config.rollout import RolloutConfig


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": {"top_k": 0}}, "train.top_k"),
        ({"train": {"repetition_penalty": 0.0}}, "train.repetition_penalty"),
        ({"train": {"top_p": 0.0}}, "train.top_p"),
        ({"kv_cache_gb": 0}, "kv_cache_gb"),
        ({"tensor_parallel": 0}, "tensor_parallel"),
        ({"max_model_len": 1024}, "train.max_response_length"),
        ({"colocate": True}, "did you mean 'colocated'"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(RolloutConfig, data)


def test_defaults_are_valid():
    cfg = from_dict(RolloutConfig, {"train": {"stop": ["</answer>"]}})
    assert cfg.train.stop == ["</answer>"] and cfg.colocated
