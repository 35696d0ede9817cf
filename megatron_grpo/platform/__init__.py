"""The one place that knows the compute device.

Three kinds of platform:

* ``cuda``: one GPU per rank, ``cuda:LOCAL_RANK``, NCCL. Nothing is patched.
* ``cpu``: gloo; Megatron-Core's CUDA-only calls are mapped onto the host (``patches.py``).
* ``meta``: a stand-in accelerator. Tensors on the meta device have shapes and no data, and the process
  group is torch's fake one, so one CPU process runs the real Megatron-Core code as any rank of any world
  size without memory (``standin.py``: ``plan --trace`` and the device-discipline tests). It takes the
  accelerator code path: a host tensor entering the model or a collective fails there as it would on GPU.

Code above this layer asks ``device()`` where a tensor belongs, moves host values in with ``to_device`` and
reads device values out with ``to_host``, the one boundary between the two.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Config dtype names -> torch dtypes (policy, engine and refit agree through this one table)."""

Kind = Literal["cuda", "cpu", "meta"]
FAKE_BACKEND = "cpu:fake,meta:fake"
"""torch's fake process group for both devices: meta tensors (the stand-in accelerator) and the host
tensors that object collectives pickle into."""

_kind: Kind | None = None
_local_rank = 0


class DeviceError(RuntimeError):
    """A tensor on the wrong device reached the model, a collective or a host read."""


def detected_kind() -> Kind:
    return "cuda" if torch.cuda.is_available() else "cpu"


def kind() -> Kind:
    return _kind or detected_kind()


def accelerated() -> bool:
    """True on the accelerator code path (CUDA, or the meta stand-in): device tensors, NCCL-style
    collectives, Megatron's GPU settings (fused kernels, batched p2p)."""
    return kind() != "cpu"


def has_cuda() -> bool:
    return kind() == "cuda"


def local_rank() -> int:
    """This rank's index among the processes of its node: which GPU it drives."""
    return _local_rank


def device() -> torch.device:
    """This rank's compute device: ``cuda:LOCAL_RANK``, the host, or meta."""
    k = kind()
    return torch.device("cuda", _local_rank) if k == "cuda" else torch.device(k)


def dist_backend(requested: str = "auto") -> str:
    if kind() == "meta":
        return FAKE_BACKEND
    if requested != "auto":
        return requested
    return "nccl" if kind() == "cuda" else "gloo"


def setup_platform(platform: Kind | None = None, local_rank: int | None = None) -> None:
    """Choose the platform (default: CUDA when present, else CPU) and bind this rank to its device.

    Called once per process, before any Megatron-Core object is built; a second call must agree."""
    global _kind, _local_rank
    chosen = platform or _kind or detected_kind()
    if _kind is not None and chosen != _kind:
        raise DeviceError(f"platform already set up as {_kind!r}; cannot switch to {chosen!r} in one process")
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if chosen == "cuda":
        count = torch.cuda.device_count()
        if not 0 <= local_rank < count:
            raise DeviceError(f"local rank {local_rank} has no GPU: this node shows {count} "
                              "(one process per GPU; check CUDA_VISIBLE_DEVICES and the launcher)")
        torch.cuda.set_device(local_rank)
    _local_rank = local_rank
    if _kind is None:
        from megatron_grpo.platform import patches

        patches.apply(chosen)
    _kind = chosen


def to_device(value: Any, non_blocking: bool = True) -> Any:
    """Tensors (also inside dicts) moved to ``device()``; everything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.to(device(), non_blocking=non_blocking and kind() == "cuda")
    if isinstance(value, Mapping):
        return {k: to_device(v, non_blocking) for k, v in value.items()}
    return value


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """The device -> host boundary (a sync on GPU). Meta tensors hold no values: they read as zeros."""
    if tensor.is_meta:
        return torch.zeros(tensor.shape, dtype=tensor.dtype)
    return tensor.detach().cpu()


def causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, dropout_p: float = 0.0,
                     scale: float | None = None) -> torch.Tensor:
    """torch's fused causal attention, ``[b, heads, s, d]`` with ``key``/``value`` of fewer (grouped) heads.

    On meta, ``scaled_dot_product_attention`` decomposes to its math path, which materialises the s x s
    scores a GPU never holds; the stand-in calls the flash kernel, whose meta form has flash's outputs
    (and so its memory)."""
    if query.is_meta:
        return torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, True, False,
                                                                  scale=scale)[0]
    return torch.nn.functional.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p, is_causal=True,
                                                            scale=scale, enable_gqa=key.shape[1] != query.shape[1])


def synchronize() -> None:
    if kind() == "cuda":
        torch.cuda.synchronize()


def empty_cache() -> None:
    if kind() == "cuda":
        torch.cuda.empty_cache()


def rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from on this rank: host, CUDA and Megatron's tracker streams."""
    state = {"cpu": torch.get_rng_state()}
    if kind() == "cuda":
        from megatron.core import tensor_parallel

        state["cuda"] = torch.cuda.get_rng_state()
        state["tracker"] = tensor_parallel.get_cuda_rng_tracker().get_states()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore ``rng_state()``. A checkpoint without CUDA state (made on CPU) leaves the CUDA RNG as
    seeded; one with CUDA state restores it only on CUDA."""
    torch.set_rng_state(state["cpu"])
    if kind() == "cuda" and "cuda" in state:
        from megatron.core import tensor_parallel

        torch.cuda.set_rng_state(state["cuda"])
        tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])
