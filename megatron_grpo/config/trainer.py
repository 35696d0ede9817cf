"""Trainer-loop, checkpoint and logging config sections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from megatron_grpo.config.loader import ConfigError, check_seed


@dataclass(frozen=True)
class TrainerConfig:
    seed: int = 1234
    total_epochs: int = 1
    max_steps: int | None = None
    """Stop after this many steps (``None`` = run ``total_epochs``)."""
    test_freq: int = 0
    """Validate every N steps on ``eval.sets`` (0 = never, the default; the reference config: 20)."""
    val_before_train: bool = False
    """Validate the initial weights, logged as step 0, when a run starts (not when it resumes); verl's
    default is on."""
    run_dir: str = "runs/default"
    """Metrics, resolved config and checkpoints go here."""
    max_consecutive_nonfinite: int = 3
    """Abort after this many consecutive steps with NaN/Inf loss or gradient."""

    def validate(self) -> None:
        check_seed(self.seed)
        if self.total_epochs < 1:
            raise ConfigError("total_epochs: must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError("max_steps: must be >= 1")
        if self.test_freq < 0 or self.max_consecutive_nonfinite < 1:
            raise ConfigError("test_freq must be >= 0 and max_consecutive_nonfinite >= 1")


@dataclass(frozen=True)
class CheckpointConfig:
    save_freq: int = 20
    """Save every N steps (0 = only at the end / on preemption)."""
    keep_last: int = 2
    """Older checkpoints are deleted once a newer one is complete."""
    resume: bool = True
    """Resume from ``<run_dir>/checkpoints/latest`` when it exists."""
    on_corrupt: Literal["fallback", "error"] = "fallback"
    """When the checkpoint to resume is damaged (a file missing, truncated, or not matching its checksum):
    log what is wrong and resume from the newest whole one, or stop with the error."""
    async_save: bool = False
    """Write checkpoints from a forked process while training goes on (Megatron-Core's async
    dist-checkpointing); a checkpoint is published (``latest`` moved) only once every rank's write is done.
    The run's last save and a stop request's wait for it. Costs host memory for the snapshot."""

    def validate(self) -> None:
        if self.save_freq < 0 or self.keep_last < 1:
            raise ConfigError("save_freq must be >= 0 and keep_last >= 1")


@dataclass(frozen=True)
class LoggingConfig:
    tensorboard: bool = True
    wandb: bool = False
    """Off unless asked; needs the ``wandb`` package and a key."""
    wandb_project: str = "megatron_grpo"
    progress_bar: bool = True
    samples_every: int = 10
    """Every this many steps, ``samples_per_step`` generated samples (prompt, response, reward, ground truth,
    extracted answer, length, finish reason) go to ``<run_dir>/samples.jsonl``, TensorBoard's text tab and
    wandb; each validation writes its own. 0: none."""
    samples_per_step: int = 4
    """Rows per step (the first response to each of the first prompts), and per eval set at validation."""

    def validate(self) -> None:
        if self.samples_every < 0:
            raise ConfigError(f"samples_every: must be >= 0 (0 = no samples), got {self.samples_every}")
        if self.samples_per_step < 1:
            raise ConfigError(f"samples_per_step: must be >= 1, got {self.samples_per_step}")
