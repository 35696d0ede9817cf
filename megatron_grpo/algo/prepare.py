"""Rollout -> TrainBatch: reward shaping, advantages, masks and rollout IS weights, once per rollout."""

from __future__ import annotations

import torch
from torch import Tensor

from megatron_grpo.algo.advantages import broadcast_to_tokens, group_advantages
from megatron_grpo.algo.correction import rollout_correction
from megatron_grpo.algo.dapo import overlong_penalty
from megatron_grpo.algo.loss import kl_penalty
from megatron_grpo.algo.types import RolloutBatch, TrainBatch
from megatron_grpo.config.algo import AlgoConfig


def shaped_rewards(rollout: RolloutBatch, cfg: AlgoConfig, max_response_len: int,
                   kl_penalty: Tensor | None = None) -> Tensor:
    """Outcome reward + DAPO overlong penalty - ``kl_penalty`` (``kl_reward_penalty``; only, and always, when
    the KL is in the reward)."""
    rewards = rollout.rewards.to(torch.float64)
    if cfg.overlong_buffer:
        rewards = rewards + overlong_penalty(rollout.response_lens, max_response_len, cfg.overlong_buffer,
                                             cfg.overlong_penalty)
    if cfg.kl_coef > 0 and cfg.kl_in == "reward":
        if kl_penalty is None:
            raise ValueError("the KL in the reward needs kl_penalty (kl_reward_penalty)")
        rewards = rewards - kl_penalty
    return rewards


def kl_reward_penalty(rollout: RolloutBatch, cfg: AlgoConfig, old_logprobs: Tensor | None,
                      ref_logprobs: Tensor | None) -> Tensor:
    """``kl_coef`` x the response's summed KL(pi_old || pi_ref) estimate, ``[N]`` float64."""
    if old_logprobs is None or ref_logprobs is None:
        raise ValueError("the KL in the reward needs old_logprobs and ref_logprobs")
    kl = kl_penalty(old_logprobs, ref_logprobs, cfg.kl_estimator) * rollout.response_mask
    return cfg.kl_coef * kl.sum(dim=-1).to(torch.float64)


def prepare_train_batch(rollout: RolloutBatch, old_logprobs: Tensor, cfg: AlgoConfig, max_response_len: int,
                        ref_logprobs: Tensor | None = None) -> tuple[TrainBatch, dict[str, float]]:
    """Everything the update needs, from a scored rollout and the trainer's log-probs ``[N, L]``, and
    metrics of the whole batch (``algo/*``; ``mismatch/*``, which mean something only off-policy).

    ``old_logprobs`` are the trainer's log-probs of the response tokens under the weights the rollout
    was sampled with (PPO's pi_old); ``ref_logprobs`` only when ``kl_coef > 0``.
    """
    mask = rollout.response_mask
    kl_in_reward = cfg.kl_coef > 0 and cfg.kl_in == "reward"
    penalty = kl_reward_penalty(rollout, cfg, old_logprobs, ref_logprobs) if kl_in_reward else None
    rewards = shaped_rewards(rollout, cfg, max_response_len, penalty)
    adv = group_advantages(rewards, rollout.group_size, cfg.advantage, cfg.adv_eps) * cfg.outcome_weight
    if cfg.overlong_filter:
        mask = mask & ~rollout.truncated[:, None]
    mask = mask.to(old_logprobs.dtype)
    is_weights, loss_mask, partial = rollout_correction(old_logprobs, rollout.sampler_logprobs, mask, cfg,
                                                        max(float(mask.sum()), 1.0))
    metrics = {k: float(v) for k, v in partial.items()}
    metrics.update({"algo/reward_mean": float(rollout.rewards.mean()), "algo/shaped_reward_mean": float(
        rewards.mean()), "algo/adv_abs_mean": float(adv.abs().mean())})
    if cfg.overlong_filter:
        metrics["algo/overlong_masked"] = float(rollout.truncated.sum())
    if penalty is not None:
        metrics["algo/kl_reward_penalty"] = float(penalty.mean())
    batch = TrainBatch(
        input_ids=rollout.input_ids, prompt_lens=rollout.prompt_lens, response_lens=rollout.response_lens,
        loss_mask=loss_mask, advantages=broadcast_to_tokens(adv.to(old_logprobs.dtype), loss_mask),
        old_logprobs=old_logprobs.detach(), is_weights=is_weights, ref_logprobs=ref_logprobs,
        routed_experts=rollout.routed_experts, group_size=rollout.group_size,
    )
    return batch, metrics
