"""The GRPO training loop. One step:

    prompts = sampler.next_batch()                  # resumable, deterministic
    rollout = engine.generate(prompts) + rewards    # vLLM + rule-based reward, prompts split over engines
    metrics = update_policy(rollout)                # advantages, (old log-probs), PPO mini-batches
    refit(policy -> engine)                         # HF-named tensors in buckets, no disk
    (colocated: the engine sleeps during the update, the trainer's state is in host memory meanwhile)
    validate every test_freq, checkpoint every save_freq, log every step

SPMD: every rank runs this loop and holds a colocated engine and reward workers.
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

from megatron_grpo.algo import dynamic_sampling
from megatron_grpo.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from megatron_grpo.config import Config
from megatron_grpo.launch import shutdown
from megatron_grpo.model.update import update_policy
from megatron_grpo.reshard.refit import refit
from megatron_grpo.trainer.logger import MetricsLogger, truncate_metrics
from megatron_grpo.trainer.probe import probe_engine, probe_trainer
from megatron_grpo.trainer.rollout import generate_and_score, step_seed
from megatron_grpo.trainer.setup import (
    Run,
    barrier,
    build_run,
    restore_trainer_state,
    trainer_state,
    write_provenance,
)
from megatron_grpo.trainer.signals import EXIT_REQUEUE, StopRequest
from megatron_grpo.trainer.validate import validate

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with NaN/Inf loss or gradients."""


def train(cfg: Config, run_dir: str | Path) -> int:
    """Run (or resume) training; returns the process exit code (0 done, 75 stopped by a signal)."""
    run_dir = Path(run_dir)
    stop = StopRequest()
    run = build_run(cfg, run_dir)
    if run.is_rank0:
        write_provenance(cfg, run_dir)
    _resume(run)
    # the engine starts from the policy's weights
    refit(run.policy, run.engine, run.engine_dtype, cfg.rollout.refit_check)
    run.colocation.to_generate()
    logger = MetricsLogger(run_dir, cfg.logging, run.total_steps, run.step, run_dir.name) if run.is_rank0 else None
    try:
        while run.step < run.total_steps:
            metrics = _oom_hint(train_step, run)
            run.step += 1
            if cfg.trainer.test_freq and run.step % cfg.trainer.test_freq == 0:
                metrics.update(validate(run))
            if logger:  # before the checkpoint: a kill in between reruns (and re-logs) this step
                logger.log(run.step, metrics)
            stopping = stop.agreed()
            if stopping or run.step == run.total_steps or (
                    cfg.checkpoint.save_freq and run.step % cfg.checkpoint.save_freq == 0):
                with run.colocation.trainer_on_device():
                    save_checkpoint(_ckpt_root(run), run.step, run.policy, trainer_state(run), cfg.checkpoint.keep_last)
            if stopping:
                log.warning("stop signal %s: checkpoint at step %d saved, exiting %d", stop.signal, run.step,
                            EXIT_REQUEUE)
                return EXIT_REQUEUE
        return 0
    finally:
        if logger:
            logger.close()
        run.scorer.close()
        run.engine.close()  # before the process groups go: vLLM's teardown uses them
        shutdown()


def train_step(run: Run) -> dict[str, float]:
    cfg, timer = run.cfg, StageTimer()
    with timer("rollout"):
        rollout, metrics = _rollout(run)
    if rollout is None:  # dynamic sampling found no group with reward signal: nothing to learn from
        return {**metrics, **timer.metrics(), "actor/updates_applied": 0.0, "actor/updates": 0.0}
    run.colocation.to_update()  # the engine sleeps, the trainer's state is back on the device
    with timer("update"):
        _inject_fault(run.step + 1, rollout)
        metrics.update(update_policy(run.policy, rollout, cfg.algo, cfg.rollout.train.max_response_length,
                                     cfg.rollout.train.temperature))
    _check_finite(run, metrics)
    probe = probe_trainer(run.policy, rollout) if cfg.rollout.refit_check else None
    run.colocation.to_refit()  # the trainer keeps its weights, the engine's come back
    with timer("refit"):
        metrics.update(refit(run.policy, run.engine, run.engine_dtype, cfg.rollout.refit_check))
    run.colocation.to_generate()  # the trainer's weights leave, the engine's KV cache comes back
    if probe is not None:
        metrics.update(probe_engine(probe, run.engine))
    tokens = float((rollout.prompt_lens + rollout.response_lens).sum())
    metrics.update(timer.metrics())
    metrics.update({"perf/tokens_per_s": tokens / max(timer.total, 1e-9), "data/epoch": float(run.sampler.epoch)})
    return metrics


def _rollout(run: Run):
    """One batch of prompts; with DAPO dynamic sampling, more batches until enough groups carry signal.
    Metrics describe the first, unfiltered batch (comparable across runs) plus the sampling counts."""
    cfg, first = run.cfg, {}

    def generate(attempt: int):
        items = run.dataset.select(run.sampler.next_batch())
        seed = step_seed(cfg.trainer.seed, run.step if attempt == 0 else f"{run.step}/{attempt}")
        batch, metrics = generate_and_score(run.engine, run.scorer, items, cfg.rollout.train, seed)
        first.update(metrics if attempt == 0 else {})
        return batch

    if not cfg.algo.dynamic_sampling:
        return generate(0), first
    result = dynamic_sampling(generate, cfg.data.batch_prompts, cfg.algo.dynamic_sampling_max_tries)
    first.update({"dynamic_sampling/tries": float(result.tries), "dynamic_sampling/groups_kept": float(
        result.groups_kept), "dynamic_sampling/groups_seen": float(result.groups_seen)})
    return result.batch, first


def _oom_hint(step_fn, run: Run) -> dict[str, float]:
    try:
        return step_fn(run)
    except torch.OutOfMemoryError as exc:
        raise RuntimeError(
            f"out of GPU memory at step {run.step + 1}: lower algo.micro_batch_tokens (now "
            f"{run.cfg.algo.micro_batch_tokens}), set model.recompute=full, raise parallel.tensor/pipeline, or lower "
            f"rollout.gpu_memory_utilization; `megatron-grpo plan` estimates each of these"
        ) from exc


def _check_finite(run: Run, metrics: dict[str, float]) -> None:
    """A skipped update (NaN/Inf loss or gradient) is logged; K in a row abort the run."""
    bad = metrics["actor/updates_applied"] < metrics["actor/updates"] or not math.isfinite(metrics.get("loss", 0.0))
    run.nonfinite_streak = run.nonfinite_streak + 1 if bad else 0
    metrics["actor/nonfinite_skipped"] = float(bad)
    if bad:
        log.warning("step %d: non-finite loss or gradient, update skipped (%d in a row)", run.step + 1,
                    run.nonfinite_streak)
    if run.nonfinite_streak >= run.cfg.trainer.max_consecutive_nonfinite:
        raise NonFiniteError(
            f"{run.nonfinite_streak} consecutive steps with NaN/Inf loss or gradients (step {run.step + 1}); "
            "aborting. Lower optim.lr, check the data, or raise trainer.max_consecutive_nonfinite."
        )


def _inject_fault(step: int, rollout) -> None:
    """Fault injection for tests: MEGATRON_GRPO_INJECT_NAN_STEPS="3,4" turns those steps' advantages NaN."""
    steps = os.environ.get("MEGATRON_GRPO_INJECT_NAN_STEPS", "")
    if str(step) in steps.split(","):
        rollout.rewards = torch.full_like(rollout.rewards, float("nan"))


def _ckpt_root(run: Run) -> Path:
    return run.run_dir / "checkpoints"


def _resume(run: Run) -> None:
    """Continue from ``latest`` when there is one. Either way, metrics lines past the restart point
    (a run killed before or after its last checkpoint) are dropped: those steps run again."""
    if run.cfg.checkpoint.resume and latest_checkpoint(_ckpt_root(run)) is not None:
        restore_trainer_state(run, load_checkpoint(_ckpt_root(run), run.policy))
        log.info("resumed from step %d", run.step)
    if run.is_rank0:
        truncate_metrics(run.run_dir, run.step)
    barrier()


class StageTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        if dist.is_initialized():
            dist.barrier()
        self.seconds[name] = time.perf_counter() - start

    @property
    def total(self) -> float:
        return time.perf_counter() - self._start

    def metrics(self) -> dict[str, float]:
        return {**{f"time/{k}": v for k, v in self.seconds.items()}, "time/step": self.total}
