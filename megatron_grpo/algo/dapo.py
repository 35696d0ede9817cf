"""DAPO options: dynamic sampling and overlong reward shaping (Yu et al. 2025, arXiv 2503.14476)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from megatron_grpo.algo.types import RolloutBatch


def overlong_penalty(response_lens: Tensor, max_len: int, buffer: int, factor: float = 1.0) -> Tensor:
    """Overlong reward shaping ``[N]``: ``min(-(len - (max_len - buffer)) / buffer * factor, 0)``.

    Zero up to ``max_len - buffer`` tokens, then linear down to ``-factor`` at ``max_len``: a soft signal
    against rambling that does not punish a response for merely being long.
    """
    if not 0 < buffer < max_len:
        raise ValueError(f"overlong buffer must be in (0, max_len={max_len}), got {buffer}")
    excess = response_lens.to(torch.float64) - (max_len - buffer)
    return torch.clamp(-excess / buffer * factor, max=0.0)


def groups_with_signal(rewards: Tensor, group_size: int) -> Tensor:
    """``[B]`` bool: the group's rewards are not all equal, so its advantages are not all zero."""
    grouped = rewards.reshape(-1, group_size)
    return (grouped != grouped[:, :1]).any(dim=1)


@dataclass
class DynamicSamplingResult:
    batch: RolloutBatch | None  # the kept groups (exactly target when reached); None if none had signal
    groups_kept: int
    tries: int
    groups_seen: int
    reached_target: bool


def dynamic_sampling(generate: Callable[[int], RolloutBatch], target_groups: int,
                     max_tries: int) -> DynamicSamplingResult:
    """Call ``generate(try_index)`` until ``target_groups`` groups with reward signal are collected.

    Groups whose rewards are all equal are dropped (they carry no GRPO gradient). Extra groups of the
    last round are cut, keeping the first ones. After ``max_tries`` rounds it stops with a warning and
    returns what it has, so a hard stretch of data slows a run down instead of stalling it.
    """
    if max_tries < 1 or target_groups < 1:
        raise ValueError(f"max_tries and target_groups must be >= 1, got {max_tries}, {target_groups}")
    kept: list[RolloutBatch] = []
    n_kept = seen = 0
    for tries in range(1, max_tries + 1):
        batch = generate(tries - 1)
        seen += batch.num_groups
        signal = torch.nonzero(groups_with_signal(batch.rewards, batch.group_size)).flatten()
        signal = signal[: target_groups - n_kept]
        if len(signal):
            kept.append(batch.select_groups(signal))
            n_kept += len(signal)
        if n_kept >= target_groups:
            break
    else:
        warnings.warn(f"dynamic sampling: only {n_kept} of {target_groups} groups with reward signal after "
                      f"{max_tries} tries ({seen} groups generated); training on the {n_kept} kept",
                      RuntimeWarning, stacklevel=2)
    return DynamicSamplingResult(batch=RolloutBatch.concat(kept) if kept else None, groups_kept=n_kept,
                                 tries=tries, groups_seen=seen, reached_target=n_kept >= target_groups)
