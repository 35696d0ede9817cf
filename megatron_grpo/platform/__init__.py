"""Platform set-up: the one place that knows whether we run on CUDA or on CPU.

On a CUDA machine nothing is patched. Without CUDA, ``setup_platform()`` applies the small set of
patches in ``cpu.py`` that let Megatron-Core run on CPU with gloo.
"""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Config dtype names -> torch dtypes (policy, engine and refit agree through this one table)."""

_DONE = False


def has_cuda() -> bool:
    return torch.cuda.is_available()


def device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if has_cuda() else torch.device("cpu")


def dist_backend(requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "nccl" if has_cuda() else "gloo"


def setup_platform() -> None:
    """Idempotent; call before building any Megatron-Core object."""
    global _DONE
    if _DONE:
        return
    if not has_cuda():
        from megatron_grpo.platform import cpu

        cpu.apply()
    _DONE = True
