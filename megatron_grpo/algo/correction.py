"""Rollout importance-sampling correction for the trainer/sampler numerical mismatch.

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
The weights are computed once per rollout from the whole batch and are constant during the update.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

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


def mismatch_metrics(old_logprobs: Tensor, sampler_logprobs: Tensor, mask: Tensor) -> dict[str, float]:
    """How far the sampler is from the trainer, over valid tokens: a health signal for the refit.

    ``mismatch_abs_logp``: mean |old - sampler|; ``mismatch_k3_kl``: k3 estimate of KL(mu || pi_old)
    (samples come from mu); ``mismatch_ratio_max``: largest token ratio pi_old / mu.
    """
    valid = mask.bool()
    if not valid.any():
        return {"mismatch_abs_logp": 0.0, "mismatch_k3_kl": 0.0, "mismatch_ratio_max": 0.0}
    log_r = (old_logprobs - sampler_logprobs).detach()[valid].to(torch.float64).clamp(-_LOG_CLAMP, _LOG_CLAMP)
    ratio = torch.exp(log_r)
    return {
        "mismatch_abs_logp": float(log_r.abs().mean()),
        "mismatch_k3_kl": float((ratio - 1 - log_r).mean()),
        "mismatch_ratio_max": float(ratio.max()),
    }
