"""Distributed checkpoints of the policy: what the trainer calls to save, resume and find checkpoints.

    save_checkpoint(root, step, policy, extra_state, keep_last)   # collective, atomic
    writer = CheckpointWriter(async_save); writer.save(...); writer.poll()  # the trainer's saves, async or not
    extra_state = load_checkpoint(root_or_step_dir, policy)       # collective; None if nothing saved
    latest_checkpoint(root) -> Path | None                        # no process group needed
    resume_point(root, on_corrupt) -> Path | None                 # collective: latest if whole, else fallback

``extra_state`` is the trainer's opaque JSON-serialisable dict (step, sampler position, RNG states...).
"""

from __future__ import annotations

from pathlib import Path

from megatron_grpo.checkpoint.files import CheckpointError, latest_checkpoint, verify_checkpoint
from megatron_grpo.checkpoint.state import CheckpointWriter, load_state, resume_point, save_state

__all__ = ["CheckpointError", "CheckpointWriter", "latest_checkpoint", "load_checkpoint", "resume_point",
           "save_checkpoint", "verify_checkpoint"]


def save_checkpoint(root: str | Path, step: int, policy, extra_state: dict | None = None,
                    keep_last: int | None = None) -> Path:
    """Model + optimizer + LR scheduler + ``extra_state`` to ``<root>/step_<step>``; returns that path."""
    return save_state(root, step, policy.model, policy.optimizer, policy.scheduler, extra_state, keep_last)


def load_checkpoint(path: str | Path, policy, load_optimizer: bool = True) -> dict | None:
    """Restore ``policy`` from a step directory or a root's ``latest``; returns ``extra_state``.

    ``load_optimizer=False`` loads weights only (e.g. a model-only checkpoint from ``hf-to-mcore``)."""
    if load_optimizer:
        return load_state(path, policy.model, policy.optimizer, policy.scheduler)
    extra = load_state(path, policy.model)
    policy.optimizer.reload_model_params()  # main (fp32) copies of the weights follow the loaded ones
    return extra
