import pytest

from megatron_grpo.config.algo import AlgoConfig
from megatron_grpo.config.loader import ConfigError, from_dict


@pytest.mark.parametrize("data,key", [
    ({"clip_ratio_low": 1.5}, "clip_ratio_low"),
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
    ({"loss": "ppo"}, "algo.loss: 'ppo' is not a registered policy loss"),
    ({"kl_in": "advantage"}, "kl_in"),
    # pairings a loss is defined with
    ({"loss": "drgrpo", "advantage": "grpo"}, "advantage: the drgrpo loss is defined with drgrpo"),
    ({"loss": "drgrpo", "loss_agg_mode": "token-mean"}, "loss_agg_mode: the drgrpo loss"),
    ({"loss": "gspo", "loss_agg_mode": "token-mean"}, "the gspo loss is defined with seq-mean-token-mean"),
    ({"loss": "cispo", "dual_clip": 3.0}, "dual_clip: the cispo loss has no dual clip"),
])
def test_bad_values_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key):
        from_dict(AlgoConfig, data, "algo")


def test_defaults_are_the_reference_run():
    cfg = from_dict(AlgoConfig, {"clip_ratio_high": 0.28, "dual_clip": 3})
    assert cfg.dual_clip == 3.0
    ref = AlgoConfig()
    assert (ref.loss_agg_mode, ref.kl_coef, ref.rollout_is, ref.rollout_is_threshold) == (
        "token-mean", 0.0, "token", 2.0)
    assert (ref.ppo_epochs, ref.mini_batch_prompts, ref.micro_batch_tokens, ref.entropy_coef) == (
        1, 64, 32768, 0)


@pytest.mark.parametrize("loss,want", [
    ("grpo", ("grpo", "token-mean", 0.2, 0.2)),
    ("drgrpo", ("drgrpo", "seq-mean-token-sum-norm", 0.2, 0.2)),
    ("gspo", ("grpo", "seq-mean-token-mean", 3e-4, 4e-4)),
    ("cispo", ("grpo", "token-mean", 1.0, 0.28)),
])
def test_unset_fields_take_the_loss_values_and_explicit_ones_stay(loss, want):
    cfg = from_dict(AlgoConfig, {"loss": loss})
    assert (cfg.advantage, cfg.loss_agg_mode, cfg.clip_ratio_low, cfg.clip_ratio_high) == want
    explicit = from_dict(AlgoConfig, {"loss": loss, "clip_ratio_high": 0.5, "advantage": want[0]})
    assert explicit.clip_ratio_high == 0.5


def test_a_registered_loss_is_a_valid_config_value(monkeypatch):
    """Adding a loss is one registration: the config accepts it and takes its defaults."""
    from megatron_grpo.algo import losses

    monkeypatch.setattr(losses, "POLICY_LOSSES", dict(losses.POLICY_LOSSES))
    losses.register_loss("mine", agg="seq-mean-token-sum", advantages=("rloo",), clip=(0.1, 0.3))(
        losses.ppo_clip_loss)
    cfg = from_dict(AlgoConfig, {"loss": "mine"})
    assert (cfg.advantage, cfg.loss_agg_mode, cfg.clip_ratio_low, cfg.clip_ratio_high) == (
        "rloo", "seq-mean-token-sum", 0.1, 0.3)
    with pytest.raises(ValueError, match="already registered"):
        losses.register_loss("mine")(losses.ppo_clip_loss)
