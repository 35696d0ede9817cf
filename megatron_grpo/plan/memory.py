"""Device memory of a traced run, measured from the tensors themselves (no allocator, no GPU).

``MemoryTracker`` is a dispatch mode: it sees every op's outputs, counts each new storage on the traced
device once (views share it) and drops it when torch frees it, so live bytes follow the program exactly
as a caching allocator's *allocated* bytes would (no fragmentation, no cache). Every storage carries a
category: the ``phase`` it was made in, or a later one chosen by identity (``tag``); the peak is
recorded with its breakdown. The idea is torch's ``MemTracker`` (``torch.distributed._tools``), reduced to
what a training step of Megatron needs and working on meta tensors.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Iterable
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class MemoryTracker(TorchDispatchMode):
    def __init__(self, device_type: str = "meta"):
        super().__init__()
        self.device_type = device_type
        self.phase = "other"
        self._live: dict[int, tuple[int, str]] = {}
        self.live = Counter()
        self.peak = 0
        self.peak_breakdown: dict[str, int] = {}
        self.peak_phase = ""
        self.category_peaks = Counter()
        """Highest live bytes of each category on its own (they need not coincide with the peak)."""

    # ---- what the trace controls -------------------------------------------------------------------

    @contextmanager
    def in_phase(self, name: str):
        previous, self.phase = self.phase, name
        try:
            yield
        finally:
            self.phase = previous

    def tag(self, tensors: Iterable[torch.Tensor], category: str) -> None:
        """Re-file the storages of ``tensors`` (already counted) under ``category``."""
        for tensor in tensors:
            if tensor is None or tensor.device.type != self.device_type:
                continue
            key = id(tensor.untyped_storage())
            if key in self._live:
                nbytes, old = self._live[key]
                self.live[old] -= nbytes
                self.live[category] += nbytes
                self._live[key] = (nbytes, category)
                self.category_peaks[category] = max(self.category_peaks[category], self.live[category])

    def reset_peak(self) -> None:
        self.peak, self.peak_breakdown, self.peak_phase = self.total, dict(self.live), self.phase
        self.category_peaks = Counter(self.live)

    @property
    def total(self) -> int:
        return sum(self.live.values())

    # ---- dispatch ----------------------------------------------------------------------------------

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        grew = False
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.device.type == self.device_type:
                grew |= self._add(tensor)
        if grew and self.total > self.peak:
            self.reset_peak()
        return out

    def _add(self, tensor: torch.Tensor) -> bool:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._live:
            return False
        nbytes = storage.nbytes()
        self._live[key] = (nbytes, self.phase)
        self.live[self.phase] += nbytes
        self.category_peaks[self.phase] = max(self.category_peaks[self.phase], self.live[self.phase])
        weakref.finalize(storage, self._free, key)
        return True

    def _free(self, key: int) -> None:
        nbytes, category = self._live.pop(key, (0, ""))
        if nbytes:
            self.live[category] -= nbytes
