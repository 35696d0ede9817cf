"""PPO mini-batches of whole groups, and micro-batches packed by a token budget and balanced over DP.

Layout used by the policy: *padded* micro-batches ``[mb, L_max]`` with an attention mask (right
padding). Megatron's packed THD layout (``PackedSeqParams``) needs TE / flash attention, which the
local CPU layer spec lacks, so it is not the default. The packer only sees sequence lengths and a cost
model (``layout``): ``padded`` costs ``count * longest`` slots, ``packed`` costs the sum of lengths, so
switching the policy to THD later changes one argument, not this module.

Why the packing is correct for any split: the loss normalisers are global (see ``loss.py``), so which
rank or micro-batch a sequence lands in never changes the gradient, only the speed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

Layout = Literal["padded", "packed"]


def micro_batch_cost(lengths: Sequence[int], layout: Layout = "padded") -> int:
    """Slots a micro-batch of these sequence lengths occupies (what the token budget bounds)."""
    if not lengths:
        return 0
    return len(lengths) * max(lengths) if layout == "padded" else sum(lengths)


def padding_fraction(lengths: Sequence[int], micro_batches: Sequence[Sequence[int]],
                     layout: Layout = "padded") -> float:
    """Padded slots / all slots over ``micro_batches`` (lists of indices into ``lengths``)."""
    slots = sum(micro_batch_cost([lengths[i] for i in mb], layout) for mb in micro_batches)
    real = sum(lengths[i] for mb in micro_batches for i in mb)
    return (slots - real) / slots if slots else 0.0


@dataclass(frozen=True)
class PackPlan:
    ranks: list[list[list[int]]]  # [dp rank][micro-batch] -> sequence indices into the lengths given
    padding_fraction: float       # padded slots / all slots, over all ranks
    rank_cost: list[int]          # slots per rank (the compute each rank does)

    @property
    def micro_batches(self) -> int:
        return sum(len(r) for r in self.ranks)


def pack_micro_batches(lengths: Sequence[int], dp_size: int, token_budget: int,
                       layout: Layout = "padded") -> PackPlan:
    """Split sequences over ``dp_size`` ranks into micro-batches of at most ``token_budget`` slots.

    1. sort by length, longest first (neighbours have similar lengths: little padding);
    2. cut the sorted list into k contiguous chunks, k = fewest chunks that fit the budget rounded up to
       a multiple of ``dp_size``, with the smallest per-chunk capacity that still gives k chunks, so the
       chunks have nearly equal cost;
    3. hand the chunks to ranks, largest first to the least-loaded rank, k / dp_size each.
    Every rank gets the same number of micro-batches when there are at least k sequences.
    """
    lengths = [int(n) for n in lengths]
    for i, n in enumerate(lengths):
        if n > token_budget:
            raise ValueError(f"sequence {i} has {n} tokens, more than the micro-batch token budget "
                             f"{token_budget}; raise micro_batch_tokens or lower the max lengths")
    if dp_size < 1:
        raise ValueError(f"dp_size must be >= 1, got {dp_size}")
    if not lengths:
        return PackPlan(ranks=[[] for _ in range(dp_size)], padding_fraction=0.0, rank_cost=[0] * dp_size)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    k = min(len(lengths), dp_size * math.ceil(len(_greedy(order, lengths, token_budget, layout)) / dp_size))
    chunks = _even_chunks(order, lengths, token_budget, layout, k)
    ranks = _assign(chunks, [micro_batch_cost([lengths[i] for i in c], layout) for c in chunks], dp_size)
    return PackPlan(
        ranks=ranks,
        padding_fraction=padding_fraction(lengths, chunks, layout),
        rank_cost=[sum(micro_batch_cost([lengths[i] for i in mb], layout) for mb in r) for r in ranks],
    )


def _greedy(order: list[int], lengths: list[int], capacity: int, layout: Layout) -> list[list[int]]:
    """Contiguous chunks of ``order``, each filled until the next sequence would exceed ``capacity``."""
    chunks: list[list[int]] = []
    current: list[int] = []
    longest = total = 0
    for i in order:
        n = lengths[i]
        grown = (len(current) + 1) * max(longest, n) if layout == "padded" else total + n
        if current and grown > capacity:
            chunks.append(current)
            current, longest, total = [], 0, 0
        current.append(i)
        longest, total = max(longest, n), total + n
    return chunks + [current]


def _even_chunks(order: list[int], lengths: list[int], budget: int, layout: Layout,
                 k: int) -> list[list[int]]:
    """Exactly ``k`` chunks with the smallest capacity that needs no more than ``k`` (binary search)."""
    lo, hi = max(lengths), budget
    while lo < hi:
        mid = (lo + hi) // 2
        if len(_greedy(order, lengths, mid, layout)) <= k:
            hi = mid
        else:
            lo = mid + 1
    chunks = _greedy(order, lengths, lo, layout)
    while len(chunks) < k:  # fewer than k: halve the costliest splittable chunk
        splittable = [c for c in chunks if len(c) > 1]
        big = max(splittable, key=lambda c: micro_batch_cost([lengths[i] for i in c], layout))
        chunks.remove(big)
        chunks += [big[: len(big) // 2], big[len(big) // 2:]]
    return chunks


def _assign(chunks: list[list[int]], costs: list[int], dp_size: int) -> list[list[list[int]]]:
    """Longest-processing-time assignment with at most ceil(k / dp) chunks per rank."""
    cap = math.ceil(len(chunks) / dp_size)
    ranks: list[list[list[int]]] = [[] for _ in range(dp_size)]
    load = [0] * dp_size
    for c in sorted(range(len(chunks)), key=lambda c: -costs[c]):
        rank = min((r for r in range(dp_size) if len(ranks[r]) < cap), key=lambda r: load[r])
        ranks[rank].append(chunks[c])
        load[rank] += costs[c]
    return ranks


def mini_batches(num_groups: int, group_size: int, mini_batch_prompts: int, epochs: int = 1,
                 generator: torch.Generator | None = None) -> list[list[int]]:
    """Sequence indices of each optimizer step: ``epochs`` passes over mini-batches of whole groups.

    Groups are kept whole so every mini-batch has complete GRPO groups. With a ``generator`` the group
    order is shuffled every epoch; the last mini-batch may be smaller (e.g. after dynamic sampling).
    """
    if mini_batch_prompts < 1 or epochs < 1:
        raise ValueError(f"mini_batch_prompts and epochs must be >= 1, got {mini_batch_prompts}, {epochs}")
    steps = []
    for _ in range(epochs):
        groups = torch.randperm(num_groups, generator=generator).tolist() if generator else range(num_groups)
        groups = list(groups)
        for start in range(0, num_groups, mini_batch_prompts):
            steps.append([g * group_size + j for g in groups[start:start + mini_batch_prompts]
                          for j in range(group_size)])
    return steps
