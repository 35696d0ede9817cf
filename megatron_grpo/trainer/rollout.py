"""Rollout stage: generate G responses per prompt, score them, pack the result as a ``RolloutBatch``.

The engines (``rollout.groups``, any placement) hand every rank every sample; each rank then scores a
contiguous share of the prompts with its reward workers and the shares are all-gathered, so every
rank holds the whole batch (each DP rank then trains on its share). Prompt i is always seeded as prompt
i of the step, so the samples do not depend on how many engines share the batch.

``RolloutQueue`` keeps ``rollout.max_staleness`` batches in flight ahead of training: with 1, step k+1's
batch is generated while step k trains (the engines take the refit after it). At 0 a batch is submitted
and collected in the same step: the on-policy loop.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_grpo.algo import RolloutBatch
from megatron_grpo.config import SamplingConfig
from megatron_grpo.data import PromptDataset, PromptItem, PromptSampler
from megatron_grpo.reward import RewardScorer
from megatron_grpo.rollout.groups import EngineGroup
from megatron_grpo.rollout.types import Sample, chunk


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
        routed_experts=_routed_experts(rows, width_t),
        prompt_lens=torch.tensor([len(p) for p, _ in rows], dtype=torch.long),
        response_lens=torch.tensor([len(s.token_ids) for _, s in rows], dtype=torch.long),
        sampler_logprobs=logprobs,
        rewards=torch.tensor(rewards, dtype=torch.float32),
        truncated=torch.tensor([s.finish_reason == "length" for _, s in rows]),
        group_size=group_size,
        versions=torch.tensor([s.version for _, s in rows], dtype=torch.long),
    )


def _routed_experts(rows: list[tuple[list[int], Sample]], width: int) -> torch.Tensor | None:
    """``[N, T, layers, k]`` int16 engine routing, -1 where the engine routed nothing; None unless every
    sample carries its routing (``algo.routing_replay``)."""
    if any(s.routed_experts is None for _, s in rows):
        return None
    first = rows[0][1].routed_experts
    out = torch.full((len(rows), width, *first.shape[1:]), -1, dtype=torch.int16)
    for i, (prompt, s) in enumerate(rows):
        routed = s.routed_experts
        if routed.shape[0] > len(prompt) + len(s.token_ids) or routed.shape[1:] != first.shape[1:]:
            raise ValueError(f"sample {i}: routed experts of shape {tuple(routed.shape)} for a sequence of "
                             f"{len(prompt) + len(s.token_ids)} tokens (expected [<= tokens, "
                             f"{', '.join(map(str, first.shape[1:]))}])")
        out[i, : routed.shape[0]] = routed
    return out


def score_samples(scorer: RewardScorer, items: list[PromptItem], samples: list[list[Sample]],
                  sampling: SamplingConfig) -> tuple[RolloutBatch, dict[str, float]]:
    """Collective: every rank scores its share of the prompts, then every rank gets the whole batch."""
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = chunk(len(items), world, rank)
    part, stats = None, {}
    if mine:
        chunk_items, chunk_samples = [items[i] for i in mine], [samples[i] for i in mine]
        texts = [s.text for group in chunk_samples for s in group]
        truths = [it.record.ground_truth for it in chunk_items for _ in range(sampling.n)]
        sources = [it.record.data_source for it in chunk_items for _ in range(sampling.n)]
        part = to_rollout_batch(chunk_items, chunk_samples, scorer.score(texts, truths, sources), sampling.n)
        stats = scorer.metrics()
    parts = [None] * world
    dist.all_gather_object(parts, (part, stats))
    batch = RolloutBatch.concat([p for p, _ in parts if p is not None])
    return batch, {**_batch_metrics(batch), **_reward_stats([s for _, s in parts if s])}


@dataclass
class Collected:
    """The last batch the engines handed over, as text: what ``samples.jsonl`` shows of a step."""

    items: list[PromptItem]
    samples: list[list[Sample]]
    rewards: list[float]         # one per sample, prompt-major


@dataclass
class _InFlight:
    items: list[PromptItem]
    pending: object
    sampler_before: dict  # the sampler as it was before this batch was drawn


class RolloutQueue:
    """The batches the engines work on ahead of training (``ahead`` = rollout.max_staleness); none past
    the run's last step."""

    def __init__(self, engines: EngineGroup, scorer: RewardScorer, dataset: PromptDataset, sampler: PromptSampler,
                 sampling: SamplingConfig, seed: int, ahead: int, total_steps: int, routing: bool = False):
        """``routing``: the engines record each sample's MoE routing (``algo.routing_replay``)."""
        self.engines, self.scorer, self.dataset, self.sampler = engines, scorer, dataset, sampler
        self.routing = routing
        self.sampling, self.seed, self.ahead, self.total_steps = sampling, seed, ahead, total_steps
        self._queue: deque[_InFlight] = deque()
        self.latest: Collected | None = None

    def next(self, step: int, attempt: int = 0) -> tuple[RolloutBatch, dict[str, float]]:
        """Collective: step ``step``'s batch (``attempt`` > 0: one more batch for dynamic sampling, on-policy
        only). Tops the queue up first, so the engines start on later steps before this one is waited for."""
        if attempt:
            entry = self._draw(f"{step}/{attempt}")
        else:
            while len(self._queue) <= self.ahead and step + len(self._queue) < self.total_steps:
                self._queue.append(self._draw(step + len(self._queue)))
            entry = self._queue.popleft()
        start = time.perf_counter()
        samples = self.engines.collect(entry.pending)
        waited = time.perf_counter() - start
        batch, metrics = score_samples(self.scorer, entry.items, samples, self.sampling)
        self.latest = Collected(entry.items, samples, batch.rewards.tolist())
        staleness = (step - batch.versions).float()
        metrics.update({"rollout/staleness_mean": float(staleness.mean()), "rollout/staleness_max": float(
            staleness.max()), "time/rollout_wait": waited, **self.engines.metrics(),
            "data/epoch": float(entry.sampler_before["epoch"]), "data/batch": float(entry.sampler_before["step"])})
        return batch, metrics

    def _draw(self, seed_key: int | str) -> _InFlight:
        """The sampler's next batch, submitted; seeded by ``seed_key`` (the step, or step/attempt)."""
        before = self.sampler.state_dict()  # a fresh dict of plain values
        items = self.dataset.select(self.sampler.next_batch())
        pending = self.engines.submit([it.prompt_ids for it in items], self.sampling, step_seed(self.seed, seed_key),
                                      routing=self.routing)
        return _InFlight(items, pending, before)

    def sampler_state(self) -> dict:
        """What a checkpoint saves: the sampler before the oldest batch in flight, so a resumed run draws
        that batch again (no prompt lost, none used twice); with nothing in flight, the sampler itself."""
        return self._queue[0].sampler_before if self._queue else self.sampler.state_dict()


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
    """Grader counters summed over ranks (timeouts, crashes, errors); seconds is the slowest rank's; a user
    reward's extra keys are the mean of the ranks' means (ranks score equal shares of the batch)."""
    keys = ("reward/timeouts", "reward/worker_crashes", "reward/errors")
    out = {k: sum(s.get(k, 0.0) for s in stats) for k in keys}
    out["reward/seconds"] = max((s.get("reward/seconds", 0.0) for s in stats), default=0.0)
    for key in {k for s in stats for k in s if k.startswith("reward/extra/")}:
        values = [s[key] for s in stats if key in s]
        out[key] = sum(values) / len(values)
    return out
