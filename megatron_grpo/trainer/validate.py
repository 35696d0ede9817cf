"""Validation during training: mean@k / pass@k / maj@k on the configured eval sets, on every rank's engine."""

from __future__ import annotations

from megatron_grpo.eval import answer_key_for, evaluate, grade_with, write_report
from megatron_grpo.trainer.rollout import AllEngines
from megatron_grpo.trainer.setup import Run


def validate(run: Run) -> dict[str, float]:
    """Collective: the prompts are split over all engines (the samples are those one engine would draw),
    every rank grades all of them, rank 0 writes the report. Returns flat ``eval/...`` metrics."""
    if not run.eval_sets:
        return {}
    cfg = run.cfg
    result = evaluate(AllEngines(run.engine), run.eval_sets, cfg.rollout.val, k=cfg.eval.k,
                      grade=grade_with(run.scorer, cfg.reward.correct_score), answer_key=answer_key_for(cfg.reward),
                      seed=cfg.eval.seed)
    if run.is_rank0:
        write_report(result.metrics, result.outcomes, run.run_dir / "eval", f"step_{run.step:06d}")
    return result.metrics.flat("eval")
