import math

import pytest
import torch

from megatron_grpo.algo import is_on_policy, reduce_metrics, rollout_correction, rollout_is_weights
from megatron_grpo.config.algo import AlgoConfig


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = [0, 1, 5, 3, 5]
    mask = torch.tensor([[t < n for t in range(5)] for n in lens], dtype=torch.float64)
    sampler = -torch.rand(5, 5, generator=g, dtype=torch.float64) * 2
    old = sampler + torch.randn(5, 5, generator=g, dtype=torch.float64) * 0.6
    old[2, 0] = sampler[2, 0] + 3.0  # ratio e^3 > 2
    return old, sampler, mask


def naive(old, sampler, mask, level, thr, reject):
    n, width = mask.shape
    w_out, m_out = torch.zeros(n, width, dtype=torch.float64), torch.zeros(n, width, dtype=torch.float64)
    for i in range(n):
        seq_log = sum((old[i, t] - sampler[i, t]).item() for t in range(width) if mask[i, t])
        for t in range(width):
            if not mask[i, t]:
                continue
            w = math.exp(seq_log if level == "sequence" else (old[i, t] - sampler[i, t]).item())
            if reject:
                keep = w <= thr
                w_out[i, t], m_out[i, t] = (w, 1.0) if keep else (0.0, 0.0)
            else:
                w_out[i, t], m_out[i, t] = min(w, thr), 1.0
    return w_out, m_out


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("reject", [False, True])
def test_is_weights_match_naive(level, reject):
    old, sampler, mask = inputs()
    w, m = rollout_is_weights(old, sampler, mask, level, 2.0, reject=reject)
    w_ref, m_ref = naive(old, sampler, mask, level, 2.0, reject)
    torch.testing.assert_close(w, w_ref)
    torch.testing.assert_close(m, m_ref)
    assert not w.requires_grad
    assert w.max() <= 2.0 or reject


def test_token_truncation_by_hand():
    old = torch.tensor([[0.0, math.log(3.0), math.log(0.5)]])
    w, m = rollout_is_weights(old, torch.zeros(1, 3), torch.ones(1, 3), "token", 2.0)
    assert w.tolist()[0] == pytest.approx([1.0, 2.0, 0.5])
    w, m = rollout_is_weights(old, torch.zeros(1, 3), torch.ones(1, 3), "token", 2.0, reject=True)
    assert w.tolist()[0] == pytest.approx([1.0, 0.0, 0.5]) and m.tolist() == [[1.0, 0.0, 1.0]]


@pytest.mark.parametrize("mode", ["none", "token"])
def test_rollout_correction_metrics_naive_and_summable(mode):
    """Partial sums over the global token count: the micro-batches' sum is the whole batch's mean."""
    old, sampler, mask = inputs(1)
    cfg = AlgoConfig(rollout_is=mode)
    tokens = float(mask.sum())
    weights, loss_mask, got = rollout_correction(old, sampler, mask, cfg, tokens)
    deltas = [(old[i, t] - sampler[i, t]).item() for i in range(5) for t in range(5) if mask[i, t]]
    assert float(got["mismatch/abs_logp"]) == pytest.approx(sum(abs(d) for d in deltas) / len(deltas))
    assert float(got["mismatch/k3_kl"]) == pytest.approx(sum(math.exp(d) - 1 - d for d in deltas) / len(deltas))
    assert float(got["mismatch/ratio_max"]) == pytest.approx(max(math.exp(d) for d in deltas))
    if mode == "none":
        assert torch.equal(weights, mask) and "mismatch/is_weight_mean" not in got
    else:
        want = sum(min(math.exp(d), 2.0) for d in deltas) / len(deltas)
        assert float(got["mismatch/is_weight_mean"]) == pytest.approx(want)
    parts = [rollout_correction(old[s], sampler[s], mask[s], cfg, tokens)[2] for s in (slice(0, 2), slice(2, 5))]
    for key, value in reduce_metrics(parts).items():
        assert float(value) == pytest.approx(float(got[key])), key
    _, _, empty = rollout_correction(old, sampler, torch.zeros_like(mask), cfg, 1.0)
    assert float(empty["mismatch/ratio_max"]) == 0.0


def test_is_on_policy_is_the_one_rule():
    """One optimizer step per rollout, unless pi_old is needed before the loss."""
    assert is_on_policy(AlgoConfig(mini_batch_prompts=8), 8)
    assert is_on_policy(AlgoConfig(mini_batch_prompts=8), 6)  # dynamic sampling gave fewer groups
    assert not is_on_policy(AlgoConfig(mini_batch_prompts=4), 8)
    assert not is_on_policy(AlgoConfig(mini_batch_prompts=8, ppo_epochs=2), 8)
    assert not is_on_policy(AlgoConfig(mini_batch_prompts=8, rollout_is_mask=True), 8)
    assert not is_on_policy(AlgoConfig(mini_batch_prompts=8, kl_coef=0.1, kl_in="reward"), 8)
    assert is_on_policy(AlgoConfig(mini_batch_prompts=8, kl_coef=0.1, kl_in="loss"), 8)


def test_unknown_level():
    old, sampler, mask = inputs()
    with pytest.raises(ValueError, match="geometric"):
        rollout_is_weights(old, sampler, mask, "geometric", 2.0)
