"""Validation during training: mean@k / pass@k / maj@k on the configured eval sets (rank 0's engine)."""

from __future__ import annotations

import torch.distributed as dist

from megatron_grpo.eval import answer_key_for, evaluate, grade_with, write_report
from megatron_grpo.trainer.setup import Run


def validate(run: Run) -> dict[str, float]:
    """Collective only in that other ranks wait; returns flat ``eval/...`` metrics on every rank."""
    box = [{}]
    if run.is_rank0 and run.eval_sets:
        cfg = run.cfg
        result = evaluate(run.engine, run.eval_sets, cfg.rollout.val, k=cfg.eval.k,
                          grade=grade_with(run.scorer, cfg.reward.correct_score), answer_key=answer_key_for(cfg.reward),
                          seed=cfg.eval.seed)
        write_report(result.metrics, result.outcomes, run.run_dir / "eval", f"step_{run.step:06d}")
        box[0] = result.metrics.flat("eval")
    dist.broadcast_object_list(box, src=0)
    return box[0]
