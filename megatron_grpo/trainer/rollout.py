"""Rollout stage: generate G responses per prompt, score them, pack the result as a ``RolloutBatch``.

Colocated: every rank holds an engine. The B prompts of a step are split into contiguous chunks, one
per engine; each rank generates and scores its chunk, and the chunks are all-gathered so every rank
holds the whole batch (each DP rank then trains on its share). Prompt i is always seeded as prompt i of
the step, so the samples do not depend on how many engines share the batch.
"""

from __future__ import annotations

import hashlib

import torch
import torch.distributed as dist

from megatron_grpo.algo import RolloutBatch
from megatron_grpo.config import SamplingConfig
from megatron_grpo.data import PromptItem
from megatron_grpo.reward import RewardScorer
from megatron_grpo.rollout.types import RolloutEngine, Sample


def step_seed(seed: int, step: int | str) -> int:
    """The engine seed of a step: a pure function of (seed, step), so a resumed run samples the same."""
    return int.from_bytes(hashlib.blake2b(f"{seed}/{step}".encode(), digest_size=4).digest(), "little")


def to_rollout_batch(items: list[PromptItem], samples: list[list[Sample]], rewards: list[float],
                     group_size: int) -> RolloutBatch:
    """Right-padded tensors: ``[N, T]`` prompt+response ids, ``[N, L]`` sampler log-probs (N = B*G)."""
    rows = [(item.prompt_ids, s) for item, group in zip(items, samples, strict=True) for s in group]
    width_t = max(len(p) + len(s.token_ids) for p, s in rows)
    width_l = max(max(len(s.token_ids) for _, s in rows), 1)
    input_ids = torch.zeros(len(rows), width_t, dtype=torch.long)
    logprobs = torch.zeros(len(rows), width_l, dtype=torch.float32)
    for i, (prompt, s) in enumerate(rows):
        seq = prompt + s.token_ids
        input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        logprobs[i, : len(s.logprobs)] = torch.tensor(s.logprobs, dtype=torch.float32)
    return RolloutBatch(
        input_ids=input_ids,
        prompt_lens=torch.tensor([len(p) for p, _ in rows], dtype=torch.long),
        response_lens=torch.tensor([len(s.token_ids) for _, s in rows], dtype=torch.long),
        sampler_logprobs=logprobs,
        rewards=torch.tensor(rewards, dtype=torch.float32),
        truncated=torch.tensor([s.finish_reason == "length" for _, s in rows]),
        group_size=group_size,
    )


def _chunk(n: int, parts: int, index: int) -> range:
    """Contiguous, near-equal split of range(n) into ``parts``; the ``index``-th part."""
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return range(start, start + base + (index < extra))


class AllEngines:
    """Every rank's engine as one, collectively: ``generate`` splits the prompts over the ranks (seeded as
    one engine would seed them, so the samples do not depend on the world size) and every rank gets all
    samples back. Validation goes through it so that no engine idles while rank 0's works."""

    def __init__(self, engine: RolloutEngine):
        self._engine = engine

    def generate(self, prompts: list[list[int]], sampling: SamplingConfig, seed: int,
                 first_index: int = 0) -> list[list[Sample]]:
        mine = _chunk(len(prompts), dist.get_world_size(), dist.get_rank())
        part = (self._engine.generate([prompts[i] for i in mine], sampling, seed, first_index=first_index + mine.start)
                if mine else [])
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, part)
        return [group for p in parts for group in p]


def generate_and_score(engine: RolloutEngine, scorer: RewardScorer, items: list[PromptItem],
                       sampling: SamplingConfig, seed: int) -> tuple[RolloutBatch, dict[str, float]]:
    """Collective: this rank's chunk through its engine and scorer, then every rank gets the whole batch."""
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = _chunk(len(items), world, rank)
    chunk = [items[i] for i in mine]
    part, stats = None, {}
    if chunk:
        samples = engine.generate([it.prompt_ids for it in chunk], sampling, seed, first_index=mine.start)
        texts = [s.text for group in samples for s in group]
        truths = [it.record.ground_truth for it in chunk for _ in range(sampling.n)]
        sources = [it.record.data_source for it in chunk for _ in range(sampling.n)]
        part = to_rollout_batch(chunk, samples, scorer.score(texts, truths, sources), sampling.n)
        stats = scorer.metrics()
    parts = [None] * world
    dist.all_gather_object(parts, (part, stats))
    batch = RolloutBatch.concat([p for p, _ in parts if p is not None])
    return batch, {**_batch_metrics(batch), **_reward_stats([s for _, s in parts if s])}


def _batch_metrics(batch: RolloutBatch) -> dict[str, float]:
    lengths = batch.response_lens.float()
    solved = batch.rewards.view(-1, batch.group_size).max(1).values > batch.rewards.min()
    return {
        "reward/mean": float(batch.rewards.mean()),
        "reward/std": float(batch.rewards.std()) if batch.rewards.numel() > 1 else 0.0,
        "reward/groups_with_signal": float((batch.rewards.view(-1, batch.group_size).std(1) > 0).float().mean()),
        "reward/solved_groups": float(solved.float().mean()),
        "response_length/mean": float(lengths.mean()),
        "response_length/max": float(lengths.max()),
        "response_length/clip_ratio": float(batch.truncated.float().mean()),
    }


def _reward_stats(stats: list[dict[str, float]]) -> dict[str, float]:
    """Grader counters summed over engines (timeouts, crashes, errors); seconds is the slowest rank's."""
    keys = ("reward/timeouts", "reward/worker_crashes", "reward/errors")
    out = {k: sum(s.get(k, 0.0) for s in stats) for k in keys}
    out["reward/seconds"] = max((s.get("reward/seconds", 0.0) for s in stats), default=0.0)
    return out
