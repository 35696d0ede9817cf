"""Evaluation on the run's engines: validation during training and the ``megatron-grpo eval`` command."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from megatron_grpo.config import Config, ConfigError
from megatron_grpo.eval import EvalResult, EvalSet, answer_key_for, evaluate, grade_with, load_eval_sets, write_report
from megatron_grpo.trainer.logger import MetricsLogger
from megatron_grpo.trainer.setup import Run, build_run


def evaluate_run(run: Run, sets: list[EvalSet], out_dir: Path, name: str) -> EvalResult:
    """Collective: the prompts are split over all engines (the samples are those one engine would draw),
    every rank grades them all, rank 0 writes the report ``out_dir/name.{json,md}``."""
    cfg = run.cfg
    grade = grade_with(run.scorer, cfg.reward.correct_score, mode=cfg.reward.eval_mode)
    keep = cfg.logging.samples_per_step if cfg.logging.samples_every else 0
    result = evaluate(run.engines, sets, cfg.rollout.val, k=cfg.eval.k, grade=grade,
                      answer_key=answer_key_for(cfg.reward), seed=cfg.eval.seed, keep=keep)
    if run.is_rank0:
        write_report(result.metrics, result.outcomes, out_dir, name)
    return result


def validate(run: Run, logger: MetricsLogger | None) -> dict[str, float]:
    """Collective. Flat ``eval/...`` metrics of the configured eval sets, report under ``run_dir/eval``, and
    samples of each set through rank 0's ``logger``."""
    if not run.eval_sets:
        return {}
    result = evaluate_run(run, run.eval_sets, run.run_dir / "eval", f"step_{run.step:06d}")
    if logger:
        logger.samples(run.step, result.samples)
    return result.metrics.flat("eval")


def run_eval(cfg: Config, ckpt: str | None = None, hf: str | None = None, out: str | None = None) -> int:
    """``megatron-grpo eval``. HF directory: the engines load it directly. Megatron checkpoint: the policy
    loads it (any layout) and the refit streams it into the engines, exactly as during training."""
    from megatron_grpo.checkpoint import load_checkpoint
    from megatron_grpo.refit.stream import refit

    if not cfg.eval.sets:
        raise ConfigError("eval.sets: no evaluation sets configured")
    if hf:
        cfg = replace(cfg, model=replace(cfg.model, hf_checkpoint=hf))
    run = build_run(cfg, Path(cfg.trainer.run_dir))
    try:
        if ckpt:
            load_checkpoint(ckpt, run.policy, load_optimizer=False)
        refit(run.policy, run.engines.local, run.engine_dtype)
        sets = run.eval_sets or load_eval_sets(cfg.eval, cfg.data, run.tokenizer)
        out_dir = Path(out) if out else Path(cfg.trainer.run_dir) / "eval"
        result = evaluate_run(run, sets, out_dir, "eval")  # every engine takes a share
        if run.is_rank0:
            (out_dir / "eval.samples.jsonl").write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.samples), encoding="utf-8")
            print(json.dumps(result.metrics.flat("eval"), indent=2))
    finally:
        run.scorer.close()
        run.engines.close()
    return 0
