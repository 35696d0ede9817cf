"""Evaluation: mean@n / pass@k / maj@k metrics, the runner over a rollout engine, JSON/Markdown reports.

Trainer use::

    eval_sets = load_eval_sets(cfg.eval, cfg.data, tokenizer)                 # once, at startup
    grade = grade_with(reward_scorer, cfg.reward.correct_score, mode=cfg.reward.eval_mode)  # the run's RewardScorer
    result = evaluate(engine, eval_sets, cfg.rollout.val, k=cfg.eval.k, grade=grade, seed=cfg.eval.seed)
    logger.log(result.metrics.flat("eval"), step)
    write_report(result.metrics, result.outcomes, run_dir / "eval", f"step_{step:06d}")
"""

from megatron_grpo.eval.metrics import (
    EvalMetrics,
    ProblemOutcome,
    maj_at_k,
    pass_at_k,
    problem_metrics,
    report_ks,
    summarize,
)
from megatron_grpo.eval.report import to_json, to_markdown, write_report
from megatron_grpo.eval.runner import (
    AnswerKey,
    EvalResult,
    EvalSet,
    Grade,
    Scorer,
    answer_key_for,
    default_answer_key,
    evaluate,
    grade_with,
    load_eval_sets,
)

__all__ = [
    "answer_key_for",
    "AnswerKey", "EvalMetrics", "EvalResult", "EvalSet", "Grade", "ProblemOutcome", "Scorer", "default_answer_key",
    "evaluate", "grade_with", "load_eval_sets", "maj_at_k", "pass_at_k", "problem_metrics", "report_ks", "summarize",
    "to_json", "to_markdown", "write_report",
]
