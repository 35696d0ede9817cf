"""Which pi_old, and the rollout importance-sampling correction of the trainer/sampler mismatch: the one
copy of the on-policy logic, which the update (``model/update.py``) and ``plan`` call.

vLLM samples with its own kernels and precision, so the sampler's ``mu(y)`` differs from the trainer's
``pi_old(y)`` even for the same weights. The PPO ratio is taken against ``pi_old``; the samples however
come from ``mu``. Weighting each token's PPO loss by ``w = pi_old / mu`` corrects that (Yao et al. 2025,
"Your efficient RL framework secretly brings you off-policy RL training"; verl's rollout correction):

    loss_token = w.detach() * ppo_clip_loss_token,   w = exp(old_logprob_trainer - logprob_sampler)

* token level: one ``w`` per token, truncated at ``threshold`` (TIS, the reference: 2.0).
* sequence level: ``w = exp(sum_t (old - sampler))`` of the whole response, broadcast to its tokens.
* masking instead of truncation: tokens (or whole sequences) with ``w > threshold`` leave the loss
  mask; the remaining ones keep their untruncated ``w``.

Only the upper side is bounded (as TIS); a small ``w`` only shrinks a token's contribution.
Off-policy the weights are computed once per rollout from the whole batch and are constant during the
update; on-policy (``is_on_policy``) pi_old is only known inside the loss, which computes them there.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from megatron_grpo.config.algo import AlgoConfig

_LOG_CLAMP = 20.0


def rollout_is_weights(old_logprobs: Tensor, sampler_logprobs: Tensor, mask: Tensor,
                       level: Literal["token", "sequence"], threshold: float,
                       reject: bool = False) -> tuple[Tensor, Tensor]:
    """IS weights ``[N, L]`` (detached, 0 off the mask) and the possibly reduced loss mask ``[N, L]``."""
    valid = mask.bool()
    log_w = torch.where(valid, (old_logprobs - sampler_logprobs).detach(), 0.0)
    if level == "sequence":
        log_w = log_w.sum(dim=-1, keepdim=True).expand_as(log_w)
    elif level != "token":
        raise ValueError(f"unknown rollout IS level '{level}' (token, sequence)")
    weights = torch.exp(log_w.clamp(-_LOG_CLAMP, _LOG_CLAMP))
    if reject:
        valid = valid & (weights <= threshold)
    else:
        weights = weights.clamp(max=threshold)
    weights = torch.where(valid, weights, 0.0)
    return weights, valid.to(mask.dtype)


def is_on_policy(cfg: AlgoConfig, num_groups: int) -> bool:
    """Whether the update's own log-probs can serve as pi_old, so pi_old needs no forward pass.

    True for one optimizer step per rollout (one PPO epoch, one mini-batch of all ``num_groups``): the
    weights that produce the loss's log-probs are those the batch's pi_old refers to. Not with IS masking
    (it changes the loss mask, whose global token count must be known before the first micro-batch) nor
    with the KL in the reward (it needs pi_old before the advantages). The trainer and ``plan`` both ask here.
    """
    return (cfg.ppo_epochs == 1 and cfg.mini_batch_prompts >= num_groups and not cfg.rollout_is_mask
            and not (cfg.kl_coef > 0 and cfg.kl_in == "reward"))


def rollout_correction(old_logprobs: Tensor, sampler_logprobs: Tensor, mask: Tensor, cfg: AlgoConfig,
                       tokens: float) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """IS weights ``[N, L]`` (1 on the mask without correction), the loss mask, and how far the sampler is
    from the trainer, as partial sums over ``tokens`` (the global count of valid tokens): summed over
    micro-batches and DP ranks they are means (``*_max`` keys: maxima).

    ``mismatch/abs_logp``: |pi_old - mu| in log space; ``mismatch/k3_kl``: k3 estimate of KL(mu || pi_old)
    (the samples come from mu); ``mismatch/ratio_max``: the largest token ratio pi_old / mu;
    ``mismatch/is_weight_mean`` and ``mismatch/is_dropped_frac`` (masking) with the correction on.
    """
    if cfg.rollout_is == "none":
        weights, loss_mask = mask.to(old_logprobs.dtype), mask
    else:
        weights, loss_mask = rollout_is_weights(old_logprobs, sampler_logprobs, mask, cfg.rollout_is,
                                                cfg.rollout_is_threshold, reject=cfg.rollout_is_mask)
    valid = mask.bool()
    log_r = torch.where(valid, (old_logprobs - sampler_logprobs).detach().clamp(-_LOG_CLAMP, _LOG_CLAMP), 0.0)
    metrics = {
        "mismatch/abs_logp": log_r.abs().sum() / tokens,
        "mismatch/k3_kl": (log_r.exp() - 1 - log_r).sum() / tokens,
        # no valid token reads 0; numel, unlike valid.any(), is known without a device sync
        "mismatch/ratio_max": torch.where(valid, log_r.exp(), 0.0).max() if log_r.numel() else log_r.new_zeros(()),
    }
    if cfg.rollout_is != "none":
        metrics["mismatch/is_weight_mean"] = weights.sum() / tokens
        metrics["mismatch/is_dropped_frac"] = (mask.sum() - loss_mask.sum()) / tokens
    return weights, loss_mask, metrics
