import pytest

from megatron_grpo.config.algo import AlgoConfig
from megatron_grpo.config.loader import ConfigError, from_dict


@pytest.mark.parametrize("data,key", [
    ({"clip_ratio_low": 1.0}, "clip_ratio_low"),
    ({"clip_ratio_low": 0.0}, "clip_ratio_low"),
    ({"clip_ratio_high": 0.0}, "clip_ratio_high"),
    ({"dual_clip": 1.0}, "dual_clip"),
    ({"loss_agg_mode": "token-sum"}, "loss_agg_mode"),
    ({"rollout_is_threshold": 0}, "rollout_is_threshold"),
    ({"kl_estimator": "k4"}, "kl_estimator"),
    ({"advantage": "ppo"}, "advantage"),
    ({"micro_batch_tokens": 0}, "micro_batch_tokens"),
    ({"entropy_coef": -0.1}, "entropy_coef"),
    ({"clip_ratio": 0.2}, "clip_ratio"),
])
def test_bad_values_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key):
        from_dict(AlgoConfig, data)


def test_defaults_are_the_reference_run():
    cfg = from_dict(AlgoConfig, {"clip_ratio_high": 0.28, "dual_clip": 3})
    assert cfg.dual_clip == 3.0
    ref = AlgoConfig()
    assert (ref.loss_agg_mode, ref.kl_coef, ref.rollout_is, ref.rollout_is_threshold) == (
        "token-mean", 0.0, "token", 2.0)
    assert (ref.ppo_epochs, ref.mini_batch_prompts, ref.micro_batch_tokens, ref.entropy_coef) == (
        1, 64, 32768, 0)
