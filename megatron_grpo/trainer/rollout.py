"""Rollout stage: generate G responses per prompt, score them, pack the result as a ``RolloutBatch``.

On this layout the engine lives on global rank 0 (colocated, one engine); rank 0 generates and scores
the whole global batch and broadcasts it, and each DP rank then trains on its share of the sequences.
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


def step_seed(seed: int, step: int) -> int:
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


def generate_and_score(engine: RolloutEngine, scorer: RewardScorer, items: list[PromptItem],
                       sampling: SamplingConfig, seed: int) -> tuple[RolloutBatch, dict[str, float]]:
    """Rank 0 only: one engine call for the whole batch, one scorer call for all responses."""
    samples = engine.generate([it.prompt_ids for it in items], sampling, seed)
    texts = [s.text for group in samples for s in group]
    truths = [it.record.ground_truth for it in items for _ in range(sampling.n)]
    sources = [it.record.data_source for it in items for _ in range(sampling.n)]
    rewards = scorer.score(texts, truths, sources)
    batch = to_rollout_batch(items, samples, rewards, sampling.n)
    lengths = batch.response_lens.float()
    metrics = {
        "reward/mean": float(batch.rewards.mean()),
        "reward/solved_groups": float((batch.rewards.view(-1, sampling.n).max(1).values > 0).float().mean()),
        "response_length/mean": float(lengths.mean()),
        "response_length/max": float(lengths.max()),
        "response_length/clip_ratio": float(batch.truncated.float().mean()),
        **scorer.metrics(),
    }
    return batch, metrics


def broadcast_rollout(batch: RolloutBatch | None, metrics: dict | None) -> tuple[RolloutBatch, dict]:
    """Every rank gets rank 0's rollout (the trainer is SPMD; only rank 0 holds the engine)."""
    box = [(batch, metrics)]
    dist.broadcast_object_list(box, src=0)
    return box[0]
