"""Policy losses, registered by name (``algo.loss``): per-token terms that ``loss.policy_loss`` aggregates.

A loss is one function ``(logprobs, old_logprobs, advantages, mask, clip_low, clip_high, dual_clip) ->
PolicyTerms`` (all ``[n, L]``, response frame) plus what it is defined with: the aggregation, the advantage
estimators and the default clip range. ``AlgoConfig`` resolves its unset fields from the registration and
refuses contradictions at load time; adding a loss here changes no trainer code.

* ``grpo``: PPO-clip (GRPO, DAPO's clip-higher through ``clip_ratio_high``, optional dual clip).
* ``drgrpo``: the same clip, with the advantage not divided by the group std and the constant-length
  aggregation (Dr.GRPO, arXiv 2503.20783).
* ``gspo``: one ratio per sequence, the geometric mean of its token ratios, clipped as a whole (GSPO,
  arXiv 2507.18071). Written in the paper's GSPO-token form: every token carries the sequence ratio in
  value and ``sg(s_i) * grad log pi`` in gradient, which with ``seq-mean-token-mean`` is exactly GSPO.
* ``cispo``: REINFORCE weighted by the clipped, detached token ratio (MiniMax-M1, arXiv 2506.13585).
  Chosen over REINFORCE++'s baseline because it is a loss, not another advantage estimator, and because
  it keeps the gradient of every token: PPO-clip drops the clipped ones, and off-policy those are often
  the rare "fork" tokens of a reasoning trace. Its defaults follow the paper: no lower bound, 1 + 0.28 above.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

LOG_RATIO_CLAMP = 20.0  # exp(20) ~ 5e8: bounds ratios of wildly off tokens without touching normal ones


class PolicyTerms(NamedTuple):
    loss: Tensor          # [n, L] per-token loss, before aggregation
    ratio: Tensor         # [n, L] the ratio pi / pi_old the loss used (GSPO: the sequence's)
    clipped_low: Tensor   # [n, L] bool, the clip bounded this token from below
    clipped_high: Tensor  # [n, L] bool, ... from above


TokenLoss = Callable[[Tensor, Tensor, Tensor, Tensor, float, float, "float | None"], PolicyTerms]


@dataclass(frozen=True)
class PolicyLoss:
    name: str
    fn: TokenLoss
    agg: str | None                    # the aggregation the loss is defined with; None: any, token-mean by default
    advantages: tuple[str, ...] | None  # the advantage estimators it is defined with (first = default); None: any
    clip: tuple[float, float]          # default (clip_ratio_low, clip_ratio_high)
    dual_clip: bool                    # whether ``algo.dual_clip`` means anything to it


POLICY_LOSSES: dict[str, PolicyLoss] = {}


def register_loss(name: str, *, agg: str | None = None, advantages: tuple[str, ...] | None = None,
                  clip: tuple[float, float] = (0.2, 0.2), dual_clip: bool = True) -> Callable[[TokenLoss], TokenLoss]:
    def add(fn: TokenLoss) -> TokenLoss:
        if name in POLICY_LOSSES:
            raise ValueError(f"policy loss '{name}' is already registered")
        POLICY_LOSSES[name] = PolicyLoss(name, fn, agg, advantages, clip, dual_clip)
        return fn

    return add


def get_loss(name: str) -> PolicyLoss:
    if name not in POLICY_LOSSES:
        raise ValueError(f"unknown policy loss '{name}', registered: {sorted(POLICY_LOSSES)}")
    return POLICY_LOSSES[name]


def _ppo_clip(ratio: Tensor, advantages: Tensor, clip_low: float, clip_high: float,
              dual_clip: float | None) -> PolicyTerms:
    """``max(-A r, -A clip(r, 1 - low, 1 + high))``; with dual clip, for A < 0 the loss is further capped
    at ``-A c`` so one token with a huge ratio cannot dominate (Ye et al. 2020)."""
    loss = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1 - clip_low, 1 + clip_high))
    if dual_clip is not None:
        loss = torch.where(advantages < 0, torch.minimum(loss, -advantages * dual_clip), loss)
    return PolicyTerms(loss, ratio, (advantages < 0) & (ratio < 1 - clip_low),
                       (advantages > 0) & (ratio > 1 + clip_high))


def _token_ratio(logprobs: Tensor, old_logprobs: Tensor) -> Tensor:
    return torch.exp((logprobs - old_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


@register_loss("grpo")
def ppo_clip_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_low: float,
                  clip_high: float, dual_clip: float | None = None) -> PolicyTerms:
    return _ppo_clip(_token_ratio(logprobs, old_logprobs), advantages, clip_low, clip_high, dual_clip)


register_loss("drgrpo", agg="seq-mean-token-sum-norm", advantages=("drgrpo",))(ppo_clip_loss)


@register_loss("gspo", agg="seq-mean-token-mean", clip=(3e-4, 4e-4))
def gspo_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_low: float,
              clip_high: float, dual_clip: float | None = None) -> PolicyTerms:
    valid = mask.to(logprobs.dtype)
    seq_log_ratio = ((logprobs - old_logprobs) * valid).sum(-1, keepdim=True) / valid.sum(-1, keepdim=True).clamp(min=1)
    # value: the sequence ratio s_i on every token; gradient: sg(s_i) * grad log pi of the token
    log_ratio = seq_log_ratio.detach() + logprobs - logprobs.detach()
    ratio = torch.exp(log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    return _ppo_clip(ratio, advantages, clip_low, clip_high, dual_clip)


@register_loss("cispo", clip=(1.0, 0.28), dual_clip=False)
def cispo_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_low: float,
               clip_high: float, dual_clip: float | None = None) -> PolicyTerms:
    ratio = _token_ratio(logprobs, old_logprobs).detach()
    weight = ratio.clamp(1 - clip_low, 1 + clip_high)
    return PolicyTerms(-weight * advantages * logprobs, ratio, ratio < 1 - clip_low, ratio > 1 + clip_high)
