"""Graceful stop: finish the step, save, exit 75. Asked for by SIGTERM / SIGUSR1, or by a stop file.

The file is how ``slurm/train.sbatch`` passes on Slurm's pre-emption warning. A signal sent into an
``srun`` step reaches every process of it (Slurm signals the step's whole process tree), and the helper
processes the trainer starts (multiprocessing's fork server and resource tracker, engines) die of a USR1
they do not expect; srun turns SIGTERM into SIGKILL. The batch script instead creates the file named by
``$MEGATRON_GRPO_STOP_FILE``, on the shared file system, and every rank looks for it at each step's end.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import torch
import torch.distributed as dist

from megatron_grpo import platform

EXIT_REQUEUE = 75
"""Exit code after a requested stop's checkpoint: EX_TEMPFAIL, slurm/train.sbatch requeues on it."""

STOP_FILE_ENV = "MEGATRON_GRPO_STOP_FILE"


class StopRequest:
    """Set by the signal handler or the stop file; ``agreed()`` makes every rank stop at the same step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        stop_file = os.environ.get(STOP_FILE_ENV)
        self.stop_file = Path(stop_file) if stop_file else None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    @property
    def reason(self) -> str | None:
        """What asked this rank to stop, if anything has."""
        if self.signal is not None:
            return signal.Signals(self.signal).name
        if self.stop_file is not None and self.stop_file.exists():
            return f"stop file {self.stop_file}"
        return None

    def agreed(self) -> bool:
        flag = torch.tensor([1.0 if self.reason else 0.0], device=platform.device())
        if dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # a device tensor: NCCL takes no host tensors
        return bool(platform.to_host(flag).item())
