"""Policy loss: the registered per-token loss (``losses.py``), KL and entropy terms, globally normalised
aggregation.

Global normalisation (the idea of NeMo-RL's loss signature): a mini-batch is split into micro-batches
and over DP ranks, yet the loss must be the one of the whole mini-batch. Every function here returns a
*partial sum*: ``sum over this micro-batch of per-token terms / global normaliser``, where the
normaliser (``LossNorm``) is counted over the whole mini-batch on all DP ranks. Summing the partial
losses (or their gradients) over micro-batches and DP ranks gives exactly the mini-batch loss (or
gradient). The caller must therefore SUM, never average, over micro-batches and DP ranks.

Metrics follow the same rule: each value is already divided by the global token count, so summing
over micro-batches and ranks yields the mini-batch mean; keys ending in ``_max`` reduce by max.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from megatron_grpo.algo.losses import LOG_RATIO_CLAMP, PolicyTerms, get_loss
from megatron_grpo.config.algo import LOSS_AGG_MODES, AlgoConfig


@dataclass(frozen=True)
class LossNorm:
    """Global normalisers of one mini-batch: counted over ALL its micro-batches and DP ranks."""

    tokens: float   # valid (mask = 1) response tokens
    seqs: float     # sequences with at least one valid token
    max_len: int    # constant length of seq-mean-token-sum-norm (Dr.GRPO): the max response length

    @staticmethod
    def counts(masks: Iterable[Tensor]) -> Tensor:
        """Local ``[tokens, seqs]`` (float64) of this rank's masks; all-reduce SUM it over DP ranks."""
        total = torch.zeros(2, dtype=torch.float64)
        for mask in masks:
            per_seq = mask.to(torch.float64).sum(dim=-1)
            total += torch.stack([per_seq.sum(), (per_seq > 0).sum().to(torch.float64)])
        return total

    @staticmethod
    def from_counts(counts: Tensor, max_len: int) -> LossNorm:
        """Build from the all-reduced ``counts``; an all-masked mini-batch divides by 1 (loss 0)."""
        tokens, seqs = (max(float(c), 1.0) for c in counts.tolist())
        return LossNorm(tokens=tokens, seqs=seqs, max_len=max_len)


def aggregate(values: Tensor, mask: Tensor, mode: str, norm: LossNorm) -> Tensor:
    """Partial sum of per-token ``values`` ``[n, L]`` under ``mode``; see the module docstring.

    token-mean:               sum_{i,t} v / tokens
    seq-mean-token-sum:       sum_{i,t} v / seqs
    seq-mean-token-mean:      sum_i (sum_t v / len_i) / seqs      (len_i local: sequences are never split)
    seq-mean-token-sum-norm:  sum_{i,t} v / (seqs * max_len)       (Dr.GRPO's constant normaliser)
    """
    masked = values * mask.to(values.dtype)
    if mode == "token-mean":
        return masked.sum() / norm.tokens
    if mode == "seq-mean-token-sum":
        return masked.sum() / norm.seqs
    if mode == "seq-mean-token-mean":
        lens = mask.to(values.dtype).sum(dim=-1).clamp(min=1.0)
        return (masked.sum(dim=-1) / lens).sum() / norm.seqs
    if mode == "seq-mean-token-sum-norm":
        return masked.sum() / (norm.seqs * norm.max_len)
    raise ValueError(f"unknown loss_agg_mode '{mode}', expected one of {list(LOSS_AGG_MODES)}")


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str) -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman's k1 / k2 / k3).

    k1 = log r, k2 = (log r)^2 / 2, k3 = 1/r - 1 + log r with r = pi / pi_ref; k3 ("low_var_kl") is
    unbiased, never negative and has low variance.
    """
    log_ratio = (logprobs - ref_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        return torch.exp(-log_ratio) - 1 + log_ratio
    raise ValueError(f"unknown KL estimator '{estimator}' (k1, k2, k3)")


def policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, norm: LossNorm,
                cfg: AlgoConfig, is_weights: Tensor | None = None, entropy: Tensor | None = None,
                ref_logprobs: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Partial loss of one micro-batch (all ``[n, L]``, response frame) and its partial metrics.

    ``loss = agg(is_w * pg) + kl_coef * agg(kl) - entropy_coef * agg(entropy)``, ``pg`` the per-token
    terms of the registered loss ``cfg.loss``. The rollout IS weight is detached and multiplies the
    per-token policy loss before aggregation (verl's rollout correction); it does not touch the KL or
    entropy terms.
    """
    terms = get_loss(cfg.loss).fn(logprobs, old_logprobs, advantages, mask, cfg.clip_ratio_low,
                                  cfg.clip_ratio_high, cfg.dual_clip)
    pg = terms.loss if is_weights is None else terms.loss * is_weights.detach()
    loss = aggregate(pg, mask, cfg.loss_agg_mode, norm)
    metrics = {"pg_loss": loss.detach()}
    if cfg.kl_coef > 0 and cfg.kl_in == "loss":
        if ref_logprobs is None:
            raise ValueError("kl_coef > 0 with the KL in the loss needs ref_logprobs")
        kl = aggregate(kl_penalty(logprobs, ref_logprobs, cfg.kl_estimator), mask, cfg.loss_agg_mode, norm)
        loss = loss + cfg.kl_coef * kl
        metrics["kl_loss"] = kl.detach()
    if cfg.entropy_coef > 0:
        if entropy is None:
            raise ValueError("entropy_coef > 0 needs the per-token entropy")
        ent = aggregate(entropy, mask, cfg.loss_agg_mode, norm)
        loss = loss - cfg.entropy_coef * ent
        metrics["entropy"] = ent.detach()
    metrics.update(ratio_metrics(terms, advantages, mask, norm, cfg))
    return loss, metrics


def ratio_metrics(terms: PolicyTerms, advantages: Tensor, mask: Tensor, norm: LossNorm,
                  cfg: AlgoConfig) -> dict[str, Tensor]:
    """Clip fractions, approx KL(pi_old || pi) (k3) and ratio mean/max, as token-mean partial sums."""
    valid, ratio = mask.bool(), terms.ratio.detach()
    low, high = terms.clipped_low, terms.clipped_high
    approx_kl = ratio - 1 - ratio.log()

    def token_mean(x: Tensor) -> Tensor:
        return torch.where(valid, x.to(torch.float64), 0.0).sum() / norm.tokens

    metrics = {
        "clip_frac_low": token_mean(low),
        "clip_frac_high": token_mean(high),
        "approx_kl": token_mean(approx_kl),
        "ratio_mean": token_mean(ratio),
        # no valid token reads 0; numel, unlike valid.any(), is known without a device sync
        "ratio_max": torch.where(valid, ratio, 0.0).max() if ratio.numel() else ratio.new_zeros(()),
    }
    if cfg.dual_clip is not None:
        metrics["dual_clip_frac"] = token_mean((advantages < 0) & (ratio > cfg.dual_clip))
    return metrics


def reduce_metrics(parts: Iterable[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Combine partial metrics of several micro-batches: sum, or max for ``*_max`` keys, as float64 0-dim
    tensors on the parts' device (read them at the host boundary, all at once).

    Across DP ranks do the same with all-reduce SUM / MAX.
    """
    out: dict[str, Tensor] = {}
    for part in parts:
        for key, value in part.items():
            value = value.detach().to(torch.float64)
            if key not in out:
                out[key] = value
            else:
                out[key] = torch.maximum(out[key], value) if key.endswith("_max") else out[key] + value
    return out
