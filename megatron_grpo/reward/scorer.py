"""Batch scoring for the trainer: data_source -> reward function, run in a ``WorkerPool`` with a time limit.

The trainer builds one ``RewardScorer`` per run (``from_config``) and calls ``score`` every step; a response
whose grading times out, crashes its worker or raises scores ``incorrect_score`` and is counted in
``last_stats`` (logged as ``reward/timeouts`` etc.).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from megatron_grpo.config.reward import RewardConfig
from megatron_grpo.reward import user
from megatron_grpo.reward.pool import CRASH, TIMEOUT, Call, Result, StartMethod, WorkerPool
from megatron_grpo.reward.registry import get_reward

log = logging.getLogger(__name__)


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
    extra: dict[str, float] = field(default_factory=dict)
    """A user function's extra dict keys: their mean over the responses that returned them."""

    def metrics(self) -> dict[str, float]:
        return {
            "reward/mean": self.mean_score, "reward/timeouts": float(self.timeouts),
            "reward/worker_crashes": float(self.crashes), "reward/errors": float(self.errors),
            "reward/seconds": self.seconds, **{f"reward/extra/{k}": v for k, v in self.extra.items()},
        }


class RewardScorer:
    """Scores batches of responses with the reward registered for each ``data_source``, or with the user's
    function (``reward/user.py``) when one is given."""

    def __init__(
        self,
        *,
        workers: int | None = None,
        timeout_s: float = 5.0,
        start_method: StartMethod = "forkserver",
        function: str | None = None,
        on_error: str = "incorrect",
        **options: object,
    ) -> None:
        """``options`` go to every built-in reward function (``correct_score``, ``fallback``, ...).
        ``function`` (``"file.py:name"``) is imported here first: a file that does not load fails now."""
        self.function = user.UserFunction.parse(function) if function else None
        if self.function is not None:
            user.load(self.function)
        self.on_error, self.timeout_s = on_error, timeout_s
        self.options = options
        self.incorrect_score = float(options.get("incorrect_score", 0.0))
        self.pool = WorkerPool(workers, timeout_s=timeout_s, start_method=start_method)
        self.last_stats = ScoreStats()

    def score(
        self,
        responses: Sequence[str],
        ground_truths: Sequence[str],
        data_sources: str | Sequence[str] = "math",
        *,
        use_function: bool = True,
        **overrides: object,
    ) -> list[float]:
        """One score per response; ``data_sources`` is one name for the batch or one per response.
        ``overrides`` replace options for this call only (validation grades in ``mode="lenient"``);
        ``use_function=False`` grades with the built-in rewards even when the user gave a function."""
        sources = [data_sources] * len(responses) if isinstance(data_sources, str) else list(data_sources)
        if not len(responses) == len(ground_truths) == len(sources):
            raise ValueError(
                f"lengths differ: {len(responses)} responses, {len(ground_truths)} ground truths, "
                f"{len(sources)} data sources"
            )
        fn = self.function if use_function else None
        rows = list(enumerate(zip(responses, ground_truths, sources, strict=True)))
        if fn is not None:
            calls = [Call(i, user.call, (fn.path, fn.name, source, response, str(truth)))
                     for i, (response, truth, source) in rows]
        else:
            fns = {name: get_reward(name) for name in set(sources)}  # unknown names fail before any work
            options = {**self.options, **overrides}
            calls = [Call(i, fns[source], (response, str(truth)), options) for i, (response, truth, source) in rows]
        start = time.perf_counter()
        results = self.pool.run(calls)
        outcomes = [results[i] for i in range(len(calls))]
        scores = [self._score(r) for r in outcomes]
        self.last_stats = ScoreStats(
            responses=len(calls), timeouts=outcomes.count(TIMEOUT), crashes=outcomes.count(CRASH),
            errors=sum(isinstance(r, tuple) for r in outcomes), seconds=time.perf_counter() - start,
            mean_score=sum(scores) / len(scores) if scores else 0.0, extra=_extra_means(outcomes),
        )
        if fn is not None:
            self._report_failures(fn, outcomes)
        return scores

    def _score(self, result: Result) -> float:
        if isinstance(result, float):
            return result
        return result["score"] if isinstance(result, dict) else self.incorrect_score

    def _report_failures(self, fn: user.UserFunction, outcomes: list[Result]) -> None:
        """A user function's failed calls score ``incorrect_score`` with a warning, or stop the run."""
        stats = self.last_stats
        failed = stats.timeouts + stats.crashes + stats.errors
        if not failed:
            return
        errors = [r[1] for r in outcomes if isinstance(r, tuple)]
        message = (f"reward function {fn.label}: {failed} of {stats.responses} responses failed ({stats.timeouts} "
                   f"timed out after {self.timeout_s} s, {stats.crashes} crashed its worker, {stats.errors} raised"
                   + (f"; first: {errors[0]}" if errors else "") + ")")
        if self.on_error == "abort":
            raise user.RewardFunctionError(f"{message}; reward.on_error: abort stops the run")
        log.warning("%s; they score incorrect_score %s (reward.on_error: incorrect)", message, self.incorrect_score)

    def metrics(self) -> dict[str, float]:
        return self.last_stats.metrics()

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _extra_means(outcomes: list[Result]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for result in outcomes:
        if isinstance(result, dict):
            for key, value in result.items():
                if key != "score":
                    sums.setdefault(key, []).append(value)
    return {key: sum(values) / len(values) for key, values in sums.items()}


def from_config(cfg: RewardConfig) -> RewardScorer:
    """The run's persistent scorer, built from the ``reward`` config section."""
    return RewardScorer(
        workers=cfg.workers, timeout_s=cfg.timeout_s, start_method=cfg.start_method,
        function=cfg.function, on_error=cfg.on_error, correct_score=cfg.correct_score,
        incorrect_score=cfg.incorrect_score, mode=cfg.mode, fallback=cfg.fallback, tail_chars=cfg.tail_chars,
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
