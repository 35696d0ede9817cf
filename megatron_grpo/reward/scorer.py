"""Batch scoring for the trainer: data_source -> reward function, run in a ``WorkerPool`` with a time limit.

The trainer builds one ``RewardScorer`` per run (``from_config``) and calls ``score`` every step; a response
whose grading times out, crashes its worker or raises scores ``incorrect_score`` and is counted in
``last_stats`` (logged as ``reward/timeouts`` etc.).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from megatron_grpo.config.reward import RewardConfig
from megatron_grpo.reward.pool import CRASH, ERROR, TIMEOUT, Call, StartMethod, WorkerPool
from megatron_grpo.reward.registry import get_reward


@dataclass(frozen=True)
class ScoreStats:
    """What happened in one ``score`` call."""

    responses: int = 0
    timeouts: int = 0
    crashes: int = 0
    errors: int = 0
    """Reward functions that raised."""
    seconds: float = 0.0
    mean_score: float = 0.0

    def metrics(self) -> dict[str, float]:
        return {
            "reward/mean": self.mean_score, "reward/timeouts": float(self.timeouts),
            "reward/worker_crashes": float(self.crashes), "reward/errors": float(self.errors),
            "reward/seconds": self.seconds,
        }


class RewardScorer:
    """Scores batches of responses with the reward registered for each ``data_source``."""

    def __init__(
        self,
        *,
        workers: int | None = None,
        timeout_s: float = 5.0,
        start_method: StartMethod = "forkserver",
        **options: object,
    ) -> None:
        """``options`` go to every reward function (``correct_score``, ``fallback``, ...)."""
        self.options = options
        self.incorrect_score = float(options.get("incorrect_score", 0.0))
        self.pool = WorkerPool(workers, timeout_s=timeout_s, start_method=start_method)
        self.last_stats = ScoreStats()

    def score(
        self,
        responses: Sequence[str],
        ground_truths: Sequence[str],
        data_sources: str | Sequence[str] = "math",
        **overrides: object,
    ) -> list[float]:
        """One score per response; ``data_sources`` is one name for the batch or one per response.
        ``overrides`` replace options for this call only (validation grades in ``mode="lenient"``)."""
        sources = [data_sources] * len(responses) if isinstance(data_sources, str) else list(data_sources)
        if not len(responses) == len(ground_truths) == len(sources):
            raise ValueError(
                f"lengths differ: {len(responses)} responses, {len(ground_truths)} ground truths, "
                f"{len(sources)} data sources"
            )
        fns = {name: get_reward(name) for name in set(sources)}  # unknown names fail before any work
        options = {**self.options, **overrides}
        calls = [
            Call(i, fns[source], (response, str(truth)), options)
            for i, (response, truth, source) in enumerate(zip(responses, ground_truths, sources, strict=True))
        ]
        start = time.perf_counter()
        results = self.pool.run(calls)
        outcomes = [results[i] for i in range(len(calls))]
        scores = [r if isinstance(r, float) else self.incorrect_score for r in outcomes]
        self.last_stats = ScoreStats(
            responses=len(calls), timeouts=outcomes.count(TIMEOUT), crashes=outcomes.count(CRASH),
            errors=outcomes.count(ERROR), seconds=time.perf_counter() - start,
            mean_score=sum(scores) / len(scores) if scores else 0.0,
        )
        return scores

    def metrics(self) -> dict[str, float]:
        return self.last_stats.metrics()

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def from_config(cfg: RewardConfig) -> RewardScorer:
    """The run's persistent scorer, built from the ``reward`` config section."""
    return RewardScorer(
        workers=cfg.workers, timeout_s=cfg.timeout_s, start_method=cfg.start_method,
        correct_score=cfg.correct_score, incorrect_score=cfg.incorrect_score, mode=cfg.mode, fallback=cfg.fallback,
        tail_chars=cfg.tail_chars,
    )


def score_batch(
    responses: Sequence[str],
    ground_truths: Sequence[str],
    *,
    timeout_s: float = 5.0,
    workers: int | None = None,
    data_sources: str | Sequence[str] = "math",
    **options: object,
) -> list[float]:
    """One-shot ``RewardScorer`` (pays the pool start-up); training loops should keep a scorer instead."""
    with RewardScorer(workers=workers, timeout_s=timeout_s, **options) as scorer:
        return scorer.score(responses, ground_truths, data_sources)
