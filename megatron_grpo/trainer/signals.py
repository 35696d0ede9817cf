"""Graceful stop on SIGTERM / SIGUSR1 (Slurm's pre-emption warning): finish the step, save, exit 75."""

from __future__ import annotations

import signal

import torch
import torch.distributed as dist

from megatron_grpo import platform

EXIT_REQUEUE = 75
"""Exit code after a signal-triggered checkpoint: EX_TEMPFAIL, slurm/train.sbatch requeues on it."""


class StopRequest:
    """Set by the signal handler; ``agreed()`` makes every rank stop at the same step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def agreed(self) -> bool:
        flag = torch.tensor([1.0 if self.signal is not None else 0.0], device=platform.device())
        if dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # a device tensor: NCCL takes no host tensors
        return bool(platform.to_host(flag).item())
