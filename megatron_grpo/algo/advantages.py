"""Outcome advantages, registered by name (``algo.advantage``): one scalar per response from its group's
rewards, broadcast over its tokens. An estimator maps ``[B, G]`` rewards to ``[B, G]`` advantages."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

Estimator = Callable[[Tensor, float], Tensor]
ADVANTAGE_ESTIMATORS: dict[str, Estimator] = {}


def register_advantage(name: str) -> Callable[[Estimator], Estimator]:
    def add(fn: Estimator) -> Estimator:
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator '{name}' is already registered")
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return add


@register_advantage("grpo")
def group_normalised(grouped: Tensor, eps: float) -> Tensor:
    """``(r - mean) / (std + eps)`` with the unbiased std (as verl, whose run we reproduce)."""
    return (grouped - grouped.mean(dim=1, keepdim=True)) / (grouped.std(dim=1, keepdim=True) + eps)


@register_advantage("drgrpo")
def group_centred(grouped: Tensor, eps: float) -> Tensor:
    """``r - mean``: Dr.GRPO drops the std, which up-weights too-easy and too-hard prompts."""
    return grouped - grouped.mean(dim=1, keepdim=True)


@register_advantage("rloo")
def leave_one_out(grouped: Tensor, eps: float) -> Tensor:
    """``r - mean of the other G-1`` = ``G/(G-1) * (r - mean)``: an unbiased baseline."""
    g = grouped.shape[1]
    return (grouped - grouped.mean(dim=1, keepdim=True)) * (g / (g - 1))


def group_advantages(rewards: Tensor, group_size: int, mode: str = "grpo", eps: float = 1e-6) -> Tensor:
    """Advantage of each of ``N = B*G`` responses (``rewards`` ``[N]``, groups adjacent) -> ``[N]``.
    A group whose rewards are all equal gets advantage 0 under every built-in estimator."""
    if group_size < 2:
        raise ValueError(f"group advantages need >= 2 responses per prompt, got group_size={group_size}")
    if rewards.dim() != 1 or rewards.shape[0] % group_size:
        raise ValueError(f"rewards must be [B*G] with G={group_size}, got shape {tuple(rewards.shape)}")
    if mode not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator '{mode}', registered: {sorted(ADVANTAGE_ESTIMATORS)}")
    return ADVANTAGE_ESTIMATORS[mode](rewards.reshape(-1, group_size), eps).reshape(-1)


def broadcast_to_tokens(advantages: Tensor, mask: Tensor) -> Tensor:
    """Per-response advantages ``[N]`` -> per-token ``[N, L]``, zero where ``mask`` is 0."""
    return advantages[:, None] * mask.to(advantages.dtype)
