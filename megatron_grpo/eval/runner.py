"""Evaluation runner: eval sets -> rollout engine -> grader -> metrics.

The grader and the answer key are parameters, so the runner works with any reward implementation
and the tests use a fake engine; the answer key defaults to ``megatron_grpo.reward``'s extraction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

from megatron_grpo.config.data import DataConfig, EvalConfig
from megatron_grpo.config.reward import RewardConfig
from megatron_grpo.config.rollout import SamplingConfig
from megatron_grpo.data.dataset import PromptDataset, build_dataset
from megatron_grpo.data.readers import read_records
from megatron_grpo.data.templates import ChatTokenizer
from megatron_grpo.eval.metrics import EvalMetrics, ProblemOutcome, summarize
from megatron_grpo.reward import extract_answer, normalize_answer
from megatron_grpo.reward.extract import DEFAULT_TAIL_CHARS
from megatron_grpo.rollout.samples import sample_rows
from megatron_grpo.rollout.types import RolloutEngine

Grade = Callable[[list[str], list[str]], list[bool]]   # (responses, ground truths) -> correct, same length
AnswerKey = Callable[[str], str | None]                # response -> normalized final answer (None: none)


class Scorer(Protocol):
    """What ``grade_with`` needs of the reward's batch scorer (``megatron_grpo.reward``'s RewardScorer)."""

    def score(self, responses: Sequence[str], ground_truths: Sequence[str],
              data_sources: str | Sequence[str], *, use_function: bool = True, **overrides: object) -> list[float]: ...


def grade_with(scorer: Scorer, correct_score: float = 1.0, data_source: str = "math",
               mode: str = "lenient") -> Grade:
    """A ``Grade`` from the run's reward scorer: a sample is correct when it earns ``correct_score``
    (reward.correct_score), graded in ``mode`` (reward.eval_mode). Every eval set is graded as
    ``data_source`` so set names need no registration."""
    def grade(responses: list[str], ground_truths: list[str]) -> list[bool]:
        scores = scorer.score(responses, ground_truths, data_source, use_function=False, mode=mode)
        return [s >= correct_score for s in scores]
    return grade


@dataclass(frozen=True)
class EvalSet:
    name: str
    dataset: PromptDataset   # prompts tokenized exactly like the training prompts


@dataclass(frozen=True)
class EvalResult:
    metrics: EvalMetrics
    outcomes: list[ProblemOutcome]   # one per problem, sets in order
    samples: list[dict]              # readable rows: the first response to the first ``keep`` problems of each set


def default_answer_key(response: str, fallback: str = "none", tail_chars: int = DEFAULT_TAIL_CHARS,
                       mode: str = "lenient") -> str | None:
    """maj@k voting key: the reward's extracted final answer, normalized."""
    answer = extract_answer(response, mode=mode, fallback=fallback, tail_chars=tail_chars)
    return None if answer is None else normalize_answer(answer)


def answer_key_for(cfg: RewardConfig) -> AnswerKey:
    """The voting key that extracts answers exactly as evaluation grades them (same mode, fallback, tail)."""
    return partial(default_answer_key, fallback=cfg.fallback, tail_chars=cfg.tail_chars, mode=cfg.eval_mode)


def load_eval_sets(cfg: EvalConfig, data_cfg: DataConfig, tokenizer: ChatTokenizer) -> list[EvalSet]:
    """The configured sets, first ``cfg.max_problems`` of each, with the data section's prompt format.
    Bad rows always reject an eval file, and no prompt is dropped for length: the numbers must be over
    the whole set."""
    sets = []
    for s in cfg.sets:
        records, _ = read_records(Path(s.path), "reject", default_source=s.name)
        dataset, _ = build_dataset(records[:cfg.max_problems], tokenizer, data_cfg)
        sets.append(EvalSet(s.name, dataset))
    return sets


def evaluate(engine: RolloutEngine, eval_sets: list[EvalSet], sampling: SamplingConfig, *, k: int,
             grade: Grade, answer_key: AnswerKey = default_answer_key, seed: int = 0, keep: int = 0) -> EvalResult:
    """Generate ``sampling.n`` samples per problem of every set in one engine call, grade them, and
    summarize with pass@/maj@ up to ``k`` (k <= sampling.n); ``keep`` rows per set for samples.jsonl."""
    if k > sampling.n:
        raise ValueError(f"eval k={k} exceeds the samples per problem rollout.val.n={sampling.n}")
    items = [(s.name, item) for s in eval_sets for item in s.dataset.items]
    samples = engine.generate([item.prompt_ids for _, item in items], sampling, seed)
    if len(samples) != len(items) or any(len(group) != sampling.n for group in samples):
        raise RuntimeError(f"engine returned {[len(g) for g in samples]} samples for {len(items)} prompts "
                           f"x n={sampling.n}")
    responses = [s.text for group in samples for s in group]
    truths = [item.record.ground_truth for _, item in items for _ in range(sampling.n)]
    correct = grade(responses, truths)
    outcomes = [
        ProblemOutcome(
            set_name=name, index=item.record.index,
            correct=[bool(c) for c in correct[i * sampling.n:(i + 1) * sampling.n]],
            answers=[answer_key(r) for r in responses[i * sampling.n:(i + 1) * sampling.n]],
        )
        for i, (name, item) in enumerate(items)
    ]
    rows, start = [], 0
    for s in eval_sets:
        end = start + len(s.dataset.items)
        rows += sample_rows(f"val/{s.name}", s.dataset.items, samples[start:end],
                            [float(c) for c in correct[start * sampling.n:end * sampling.n]], keep, answer_key)
        start = end
    return EvalResult(summarize(outcomes, k), outcomes, rows)
