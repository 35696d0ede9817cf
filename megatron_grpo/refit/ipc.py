"""Refit buckets by memory handle: a trainer rank lends its packed bucket (``transfer.pack``) to the engine
worker on its own GPU, which reads it in place. Nothing crosses a link; the worker copies each tensor
straight from the trainer's buffer into its weights.

On CUDA a handle is torch's CUDA-IPC description of the buffer (``torch.multiprocessing.reductions``,
as verl, NeMo-RL and slime send theirs), plus the GPU's UUID: the worker refuses a handle from another
GPU, and opens it on its own device index (its ``CUDA_VISIBLE_DEVICES`` numbers GPUs differently). On
CPU it is a POSIX shared-memory segment the trainer copied the bucket into: the same protocol, so the
CPU tests run every step but the CUDA call itself.

The lender keeps the buffer alive until every worker has answered for the bucket (``Lent.release``).
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory

import torch


@dataclass(frozen=True)
class Handle:
    kind: str            # "cuda" or "shm"
    gpu: str | None      # the lender's GPU UUID (cuda)
    nbytes: int
    payload: tuple       # cuda: reduce_tensor's (rebuild, args); shm: (segment name,)


class Lent:
    """The lender's side of one bucket: keep it until the borrowers are done, then ``release``."""

    def __init__(self, handle: Handle, keep: object, segment: shared_memory.SharedMemory | None = None):
        self.handle, self._keep, self._segment = handle, keep, segment

    def release(self) -> None:
        self._keep = None
        if self._segment is not None:
            self._segment.close()
            self._segment.unlink()
            self._segment = None


def _gpu_uuid(device: torch.device) -> str:
    return str(torch.cuda.get_device_properties(device).uuid)


def lend(flat: torch.Tensor) -> Lent:
    """A handle on ``flat`` (a contiguous uint8 buffer) for a process on the same GPU or host."""
    if flat.device.type == "cuda":
        from torch.multiprocessing.reductions import reduce_tensor

        return Lent(Handle("cuda", _gpu_uuid(flat.device), flat.numel(), reduce_tensor(flat)), flat)
    segment = shared_memory.SharedMemory(create=True, size=max(flat.numel(), 1))
    torch.frombuffer(segment.buf, dtype=torch.uint8, count=flat.numel()).copy_(flat.to("cpu"))
    return Lent(Handle("shm", None, flat.numel(), (segment.name,)), None, segment)


class Borrowed:
    """The borrower's side: ``tensor`` is the lender's buffer; ``close`` once nothing refers to it."""

    def __init__(self, handle: Handle, device: torch.device):
        self._segment = None
        if handle.kind == "cuda":
            if (mine := _gpu_uuid(device)) != handle.gpu:
                raise ValueError(f"a refit bucket lent on GPU {handle.gpu} reached a worker on GPU {mine}: the "
                                 "engine's workers must sit on their trainer ranks' GPUs")
            rebuild, args = handle.payload
            args = (*args[:6], device.index if device.index is not None else torch.cuda.current_device(), *args[7:])
            self.tensor = rebuild(*args)
        else:
            self._segment = shared_memory.SharedMemory(name=handle.payload[0])
            # The lender unlinks the segment; this process must not (Python < 3.13 tracks attachments too).
            resource_tracker.unregister(self._segment._name, "shared_memory")
            self.tensor = torch.frombuffer(self._segment.buf, dtype=torch.uint8, count=handle.nbytes)

    def close(self) -> None:
        self.tensor = None
        if self._segment is not None:
            self._segment.close()
            self._segment = None
