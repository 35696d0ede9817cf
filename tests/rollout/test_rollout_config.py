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
        ({"placment": "colocated"}, "did you mean 'placement'"),
        ({"placement": "remote"}, "placement"),
        ({"max_staleness": 1}, "max_staleness: generating ahead needs placement: disaggregated"),
        ({"placement": "colocated_process", "max_staleness": 1}, "max_staleness: generating ahead needs placement"),
        ({"placement": "colocated_process", "launch_engines": False}, "launch_engines: colocated_process engines"),
        ({"placement": "disaggregated", "launch_engines": False}, "engine_port"),
        ({"placement": "disaggregated", "num_engines": 0}, "num_engines"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(RolloutConfig, data)


def test_defaults_are_valid():
    cfg = from_dict(RolloutConfig, {"train": {"stop": ["</answer>"]}})
    assert cfg.train.stop == ["</answer>"] and cfg.placement == "colocated"
