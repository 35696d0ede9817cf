"""``megatron-grpo eval``: score a checkpoint (Megatron or HF) on the config's eval sets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from megatron_grpo.config import Config, ConfigError

log = logging.getLogger(__name__)


def run_eval(cfg: Config, ckpt: str | None = None, hf: str | None = None, out: str | None = None) -> int:
    """HF directory: the engine loads it directly. Megatron checkpoint: the policy loads it (any layout)
    and the refit streams it into the engine, exactly as during training."""
    from megatron_grpo.checkpoint import load_checkpoint
    from megatron_grpo.eval import load_eval_sets
    from megatron_grpo.reshard.refit import refit
    from megatron_grpo.trainer.setup import build_run
    from megatron_grpo.trainer.validate import evaluate_run

    if not cfg.eval.sets:
        raise ConfigError("eval.sets: no evaluation sets configured")
    if hf:
        cfg = _with_checkpoint(cfg, hf)
    run = build_run(cfg, Path(cfg.trainer.run_dir))
    if ckpt:
        load_checkpoint(ckpt, run.policy, load_optimizer=False)
    refit(run.policy, run.engine, run.engine_dtype)
    sets = run.eval_sets or load_eval_sets(cfg.eval, cfg.data, run.tokenizer)
    out_dir = Path(out) if out else Path(cfg.trainer.run_dir) / "eval"
    metrics = evaluate_run(run, sets, out_dir, "eval")  # every rank's engine takes a share
    if run.is_rank0:
        print(json.dumps(metrics.flat("eval"), indent=2))
    run.scorer.close()
    return 0


def _with_checkpoint(cfg: Config, hf: str) -> Config:
    from dataclasses import replace

    return replace(cfg, model=replace(cfg.model, hf_checkpoint=hf))
