"""The rules of the stand-in accelerator world (platform ``meta``), installed with it.

torch's fake process group accepts any tensor and moves no data. To make it as strict as NCCL:

* every tensor entering a collective must be on the accelerator (meta): a host tensor raises
  ``DeviceError`` naming the collective, where NCCL would fail; an op mixing host and device tensors
  raises where CUDA would;
* a host read of a device tensor (``.item()``, ``float()``, ``.tolist()``) raises naming the caller, except
  at the places listed in ``_KNOWN_HOST_READS``, where it reads 0;
* object collectives (``all_gather_object`` ...) pickle through host tensors, as they may; since no data
  moves, a rank reads its peers' objects as copies of its own: ``all_gather_object`` returns the caller's
  object from every rank (the fake group's own behaviour) and ``broadcast_object_list`` leaves a
  non-source rank's list as it was.
"""

from __future__ import annotations

import functools
import sys
import threading
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from megatron_grpo.platform import DeviceError

_local = threading.local()
_EXEMPT = {"barrier", "monitored_barrier_"}  # no payload: the group picks its own tensor
_CROSS_DEVICE = {"copy_", "_to_copy", "copy", "index", "index_put_", "_index_put_impl_"}
"""Ops CUDA lets mix devices: host <-> device copies, and host index tensors into device tensors."""
_HOST_READS = {"_local_scalar_dense"}  # .item(), float(), bool(), int() of a tensor
_KNOWN_HOST_READS = {
    ("megatron/core/optimizer/clip_grads.py", "get_grad_norm_fp32"):
        "Megatron reads the global grad norm to the host (total_norm.item()) to compute the clip factor",
}
"""Host reads of a device tensor the stand-in accepts, each named exactly; they read as 0. Any other
read of a meta tensor raises: on GPU it would be an unplanned device sync, and the stand-in cannot know
the value. Project code reads device values through ``platform.to_host``."""


class _DeviceRules(TorchDispatchMode):
    """An op mixing meta and host tensors fails as it would mixing CUDA and host (0-dim host tensors are
    scalars and allowed); every tensor a collective takes must be on the device, as NCCL requires."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [v for v in tree_flatten((args, kwargs))[0] if isinstance(v, torch.Tensor)]
        first = tensors[0] if tensors else None
        if first is not None and first.is_meta and (func._opname in _HOST_READS or func._opname == "_to_copy" and
                                                    kwargs.get("device") not in (None, first.device)):
            return _host_read(func, first)
        host = [t for t in tensors if not t.is_meta]
        if host:
            if func.namespace == "c10d":
                if not getattr(_local, "objects", False) and func._opname not in _EXEMPT:
                    t = host[0]
                    raise DeviceError(f"c10d.{func._opname}: a {t.device} tensor {tuple(t.shape)} entered a "
                                      "collective (NCCL takes accelerator tensors only)")
            elif len(host) < len(tensors) and func._opname not in _CROSS_DEVICE:
                bad = [t for t in host if t.dim() > 0]
                if bad:
                    raise DeviceError(f"aten.{func._opname}: a {bad[0].device} tensor {tuple(bad[0].shape)} meets "
                                      "device (meta) tensors; move it with platform.to_device")
        return func(*args, **kwargs)


def _host_read(func, tensor: torch.Tensor):
    caller = _first_caller_outside_torch()
    if func._opname == "_to_copy" or caller not in _KNOWN_HOST_READS:
        file, function = caller
        raise DeviceError(f"{file}: {function} reads a device tensor {tuple(tensor.shape)} to the host "
                          f"(aten.{func._opname}): an unplanned device sync on GPU, and no value in the stand-in; "
                          "read device values through platform.to_host")
    return False if tensor.dtype is torch.bool else 0.0 if tensor.is_floating_point() else 0


def _first_caller_outside_torch() -> tuple[str, str]:
    """(path from the package root, function) of the innermost frame that is not torch, the platform or a
    dispatch mode (the memory tracker)."""
    skip = (str(Path(torch.__file__).parent), str(Path(__file__).parent))
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if not path.startswith(skip) and frame.f_code.co_name != "__torch_dispatch__":
            for root in ("megatron/", "megatron_grpo/", "tests/"):
                if root in path:
                    return root + path.split(root, 1)[1], frame.f_code.co_name
            return path, frame.f_code.co_name
        frame = frame.f_back
    return "<unknown>", "<unknown>"


def _object_collective(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _local.objects = True
        try:
            return fn(*args, **kwargs)
        finally:
            _local.objects = False

    return wrapper


def _broadcast_object_list(original):
    original = _object_collective(original)

    @functools.wraps(original)
    def broadcast(object_list, src=None, group=None, device=None, group_src=None):
        source = src if src is not None else dist.get_global_rank(group, group_src) if group_src is not None else 0
        if dist.get_rank() != source:
            return None  # the fake group delivers nothing: keep this rank's own objects
        return original(object_list, src=src, group=group, device=device, group_src=group_src)

    return broadcast


def install() -> None:
    for name in ("all_gather_object", "gather_object", "scatter_object_list"):
        setattr(dist, name, _object_collective(getattr(dist, name)))
    dist.broadcast_object_list = _broadcast_object_list(dist.broadcast_object_list)
    _DeviceRules().__enter__()  # stays active for the process lifetime
