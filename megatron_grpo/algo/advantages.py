"""Outcome advantages: one scalar per response from its group's rewards, broadcast over its tokens."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

AdvantageMode = Literal["grpo", "drgrpo", "rloo"]


def group_advantages(rewards: Tensor, group_size: int, mode: AdvantageMode = "grpo",
                     eps: float = 1e-6) -> Tensor:
    """Advantage of each of ``N = B*G`` responses (``rewards`` ``[N]``, groups adjacent) -> ``[N]``.

    grpo: ``(r - mean) / (std + eps)`` with the unbiased std (as verl, whose run we reproduce);
    drgrpo: ``r - mean`` (Dr.GRPO drops the std, which up-weights too-easy / too-hard prompts);
    rloo: ``r - mean of the other G-1`` = ``G/(G-1) * (r - mean)``.
    A group whose rewards are all equal gets advantage 0 in every mode.
    """
    if group_size < 2:
        raise ValueError(f"group advantages need >= 2 responses per prompt, got group_size={group_size}")
    if rewards.dim() != 1 or rewards.shape[0] % group_size:
        raise ValueError(f"rewards must be [B*G] with G={group_size}, got shape {tuple(rewards.shape)}")
    grouped = rewards.reshape(-1, group_size)
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    if mode == "grpo":
        adv = centered / (grouped.std(dim=1, keepdim=True) + eps)
    elif mode == "drgrpo":
        adv = centered
    elif mode == "rloo":
        adv = centered * (group_size / (group_size - 1))
    else:
        raise ValueError(f"unknown advantage mode '{mode}' (grpo, drgrpo, rloo)")
    return adv.reshape(-1)


def broadcast_to_tokens(advantages: Tensor, mask: Tensor) -> Tensor:
    """Per-response advantages ``[N]`` -> per-token ``[N, L]``, zero where ``mask`` is 0."""
    return advantages[:, None] * mask.to(advantages.dtype)

