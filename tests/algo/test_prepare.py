import dataclasses

import pytest
import torch

from megatron_grpo.algo import RolloutBatch, gather_response, group_advantages, prepare_train_batch
from megatron_grpo.config.algo import AlgoConfig


def old_logprobs_for(rollout, shift=0.1):
    return torch.where(rollout.response_mask, rollout.sampler_logprobs + shift, 0.0)


def test_reference_settings(rollout):
    old = old_logprobs_for(rollout, shift=0.9)  # ratio e^0.9 ~ 2.46 > 2: truncated
    batch, metrics = prepare_train_batch(rollout, old, AlgoConfig(), max_response_len=6)
    adv = group_advantages(rollout.rewards, rollout.group_size)
    mask = rollout.response_mask
    for i in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            assert batch.loss_mask[i, t] == float(mask[i, t])
            assert batch.advantages[i, t] == pytest.approx(float(adv[i]) if mask[i, t] else 0.0)
            assert batch.is_weights[i, t] == pytest.approx(2.0 if mask[i, t] else 0.0)
    assert metrics["mismatch/abs_logp"] == pytest.approx(0.9)
    assert metrics["mismatch/is_weight_mean"] == pytest.approx(2.0)
    assert batch.advantages[: rollout.group_size].abs().max() == 0  # all-equal group


def test_overlong_shaping_filter_and_kl_in_reward(rollout):
    old = old_logprobs_for(rollout)
    ref = old - 0.2
    cfg = AlgoConfig(advantage="drgrpo", overlong_buffer=2, overlong_penalty=0.5, overlong_filter=True,
                     kl_coef=0.1, kl_estimator="k1", kl_in="reward", rollout_is="none")
    batch, _ = prepare_train_batch(rollout, old, cfg, max_response_len=6, ref_logprobs=ref)
    rewards = []
    for r, n in zip(rollout.rewards.tolist(), rollout.response_lens.tolist(), strict=True):
        rewards.append(r + min(-(n - 4) / 2 * 0.5, 0.0) - 0.1 * 0.2 * n)
    adv = group_advantages(torch.tensor(rewards, dtype=torch.float64), rollout.group_size, "drgrpo")
    keep = rollout.response_mask & ~rollout.truncated[:, None]
    torch.testing.assert_close(batch.advantages, adv[:, None] * keep)
    torch.testing.assert_close(batch.loss_mask, keep.double())
    torch.testing.assert_close(batch.is_weights, keep.double())


def test_gather_response_and_select(rollout):
    t = rollout.input_ids.shape[1]
    per_token = torch.arange(rollout.input_ids.numel(), dtype=torch.float64).reshape(-1, t)
    got = gather_response(per_token, rollout.prompt_lens, 6)
    for i in range(got.shape[0]):
        for k in range(6):
            j = int(rollout.prompt_lens[i]) + k
            assert got[i, k] == (per_token[i, j] if j < t else 0.0)
    batch, _ = prepare_train_batch(rollout, old_logprobs_for(rollout), AlgoConfig(), 6)
    sub = batch.select([0, 1])  # empty and single-token responses
    assert sub.loss_mask.shape == (2, 1) and sub.input_ids.shape[1] == int(sub.seq_lens.max())
    assert sub.ref_logprobs is None and sub.group_size == rollout.group_size


def test_rollout_select_and_concat(rollout_factory):
    a, b = rollout_factory(groups=2, seed=1, max_resp=3), rollout_factory(groups=3, seed=2, max_resp=6)
    both = RolloutBatch.concat([a, b.select_groups([2, 0])])
    assert both.num_groups == 4 and both.sampler_logprobs.shape[1] == 6
    torch.testing.assert_close(both.rewards[8:12], b.rewards[8:12])
    torch.testing.assert_close(both.sampler_logprobs[:8, :3], a.sampler_logprobs)
    assert both.sampler_logprobs[:8, 3:].abs().max() == 0
    with pytest.raises(ValueError, match="group sizes"):
        RolloutBatch.concat([a, rollout_factory(group_size=2)])


def _with_routing(rollout: RolloutBatch, seed: int) -> RolloutBatch:
    """The rollout with engine routing [N, T, 2 layers, top-2], -1 past each sequence's routed tokens."""
    g = torch.Generator().manual_seed(seed)
    n, width = rollout.input_ids.shape
    routed = torch.randint(0, 4, (n, width, 2, 2), generator=g).to(torch.int16)
    seq_lens = rollout.prompt_lens + rollout.response_lens
    routed[torch.arange(width)[None, :] >= (seq_lens - 1)[:, None]] = -1
    return dataclasses.replace(rollout, routed_experts=routed)


def test_routed_experts_follow_their_rows_through_concat_select_and_prepare(rollout_factory):
    a = _with_routing(rollout_factory(groups=2, seed=1, max_prompt=2, max_resp=2), 1)
    b = _with_routing(rollout_factory(groups=2, seed=2, max_resp=6), 2)
    both = RolloutBatch.concat([a, b])
    width = both.input_ids.shape[1]
    assert both.routed_experts.shape == (16, width, 2, 2)
    torch.testing.assert_close(both.routed_experts[:8, : a.input_ids.shape[1]], a.routed_experts)
    assert (both.routed_experts[:8, a.input_ids.shape[1]:] == -1).all()  # padding is "not routed", not expert 0
    batch, _ = prepare_train_batch(both, old_logprobs_for(both), AlgoConfig(), 6)
    sub = batch.select([9, 3])
    assert sub.routed_experts.shape[:2] == sub.input_ids.shape
    torch.testing.assert_close(sub.routed_experts, both.routed_experts[[9, 3], : sub.input_ids.shape[1]])
    assert RolloutBatch.concat([a, rollout_factory(groups=1)]).routed_experts is None  # only when all have it
