"""The rules of the stand-in accelerator world (platform ``meta``), installed with it.

torch's fake process group accepts any tensor and moves no data. To make it as strict as NCCL:

* every tensor entering a collective must be on the accelerator (meta): a host tensor raises
  ``DeviceError`` naming the collective, where NCCL would fail; an op mixing host and device tensors
  raises where CUDA would;
* object collectives (``all_gather_object`` ...) pickle through host tensors, as they may; since no data
  moves, a rank reads its peers' objects as copies of its own: ``all_gather_object`` returns the caller's
  object from every rank (the fake group's own behaviour) and ``broadcast_object_list`` leaves a
  non-source rank's list as it was.
"""

from __future__ import annotations

import functools
import threading

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from megatron_grpo.platform import DeviceError

_local = threading.local()
_EXEMPT = {"barrier", "monitored_barrier_"}  # no payload: the group picks its own tensor
_CROSS_DEVICE = {"copy_", "_to_copy", "copy", "index", "index_put_", "_index_put_impl_", "_local_scalar_dense"}
"""Ops CUDA lets mix devices: host <-> device copies, and host index tensors into device tensors."""


class _DeviceRules(TorchDispatchMode):
    """An op mixing meta and host tensors fails as it would mixing CUDA and host (0-dim host tensors are
    scalars and allowed); every tensor a collective takes must be on the device, as NCCL requires."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [v for v in tree_flatten((args, kwargs))[0] if isinstance(v, torch.Tensor)]
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
