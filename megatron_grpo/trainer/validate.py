"""Evaluation on every rank's engine: validation during training and the ``megatron-grpo eval`` command."""

from __future__ import annotations

from pathlib import Path

from megatron_grpo.eval import EvalMetrics, EvalSet, answer_key_for, evaluate, grade_with, write_report
from megatron_grpo.trainer.rollout import AllEngines
from megatron_grpo.trainer.setup import Run


def evaluate_run(run: Run, sets: list[EvalSet], out_dir: Path, name: str) -> EvalMetrics:
    """Collective: the prompts are split over all engines (the samples are those one engine would draw),
    every rank grades them all, rank 0 writes the report ``out_dir/name.{json,md}``."""
    cfg = run.cfg
    result = evaluate(AllEngines(run.engine), sets, cfg.rollout.val, k=cfg.eval.k,
                      grade=grade_with(run.scorer, cfg.reward.correct_score), answer_key=answer_key_for(cfg.reward),
                      seed=cfg.eval.seed)
    if run.is_rank0:
        write_report(result.metrics, result.outcomes, out_dir, name)
    return result.metrics


def validate(run: Run) -> dict[str, float]:
    """Collective. Flat ``eval/...`` metrics of the configured eval sets, report under ``run_dir/eval``."""
    if not run.eval_sets:
        return {}
    return evaluate_run(run, run.eval_sets, run.run_dir / "eval", f"step_{run.step:06d}").flat("eval")
