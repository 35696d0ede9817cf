"""The weight-transfer process group: trainer rank 0 broadcasts each refit bucket to every worker of
every engine that runs in processes of its own (engine TP > 1, or disaggregated placement).

The group is separate from the trainer's world and from each engine's own TP group: trainer rank 0 is
its rank 0, worker ``w`` of engine ``e`` is rank ``1 + e * tp + w``. It is made with vLLM's stateless
process-group helper, so joining it touches neither side's global torch.distributed state; gloo on
CPU, NCCL on GPU (what TRL's and OpenRLHF's vLLM clients do). A bucket crosses it as one flat byte
buffer, one broadcast per bucket; every worker then takes the full HF tensors its own weight loader
shards. Each tensor carries a checksum of its bytes, checked by every worker before it loads anything
of the bucket: a bucket damaged in transit is named and dropped whole.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import timedelta

import torch


class TransferError(ValueError):
    """A bucket arrived damaged; the message names the tensor."""


TIMEOUT = timedelta(hours=2)
"""A broadcast may wait for an engine to finish the generation in flight (async rollouts)."""


@dataclass(frozen=True)
class TensorMeta:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    offset: int       # first byte in the bucket's buffer
    nbytes: int
    byte_sum: int     # sum of its bytes: a flipped, lost or stale byte changes it


@dataclass(frozen=True)
class Address:
    """Where the group meets (a TCP store on trainer rank 0's host) and how big it is."""

    host: str
    port: int
    world_size: int
    backend: str


def open_group(host: str, world_size: int, backend: str) -> tuple[Address, socket.socket]:
    """Rank 0's side: a listening socket for the group's store, bound now (no port race) and handed to
    ``join``. The store's server must be rank 0's own: under torchrun, torch's tcp:// rendezvous would
    otherwise take rank 0 for a client of torchrun's agent store (TORCHELASTIC_USE_AGENT_STORE)."""
    sock = socket.create_server(("", 0))
    return Address(host, sock.getsockname()[1], world_size, backend), sock


def join(address: Address, rank: int, listen_socket: socket.socket | None = None):
    """This process's handle on the group (collective: every member calls it; rank 0 with the socket
    from ``open_group``)."""
    from vllm.distributed.utils import stateless_init_torch_distributed_process_group

    return stateless_init_torch_distributed_process_group(address.host, address.port, rank, address.world_size,
                                                          address.backend, listen_socket=listen_socket,
                                                          timeout=TIMEOUT)


def byte_sum(flat: torch.Tensor) -> int:
    return int(flat.sum(dtype=torch.int64))


ALIGN = 16
"""Every tensor starts at a multiple of this in the buffer, so its bytes can be viewed as its dtype."""


def pack(bucket: list[tuple[str, torch.Tensor]]) -> tuple[list[TensorMeta], torch.Tensor]:
    """One contiguous uint8 buffer holding every tensor of ``bucket``, and where each one sits."""
    offsets, end = [], 0
    for _, tensor in bucket:
        offsets.append(end)
        end += -(-tensor.nbytes // ALIGN) * ALIGN
    flat = torch.zeros(end, dtype=torch.uint8, device=bucket[0][1].device)
    metas = []
    for (name, tensor), offset in zip(bucket, offsets, strict=True):
        view = flat[offset: offset + tensor.nbytes]
        view.copy_(tensor.contiguous().view(-1).view(torch.uint8))
        metas.append(TensorMeta(name, tuple(tensor.shape), tensor.dtype, offset, tensor.nbytes, byte_sum(view)))
    return metas, flat


def unpack(metas: list[TensorMeta], flat: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The tensors of a received buffer (views into it), after checking every tensor's byte sum."""
    for m in metas:
        got = byte_sum(flat[m.offset: m.offset + m.nbytes])
        if got != m.byte_sum:
            raise TransferError(f"{m.name}: damaged in transit (byte sum {got} != sent {m.byte_sum}); "
                                      "the bucket was not loaded")
    return [(m.name, flat[m.offset: m.offset + m.nbytes].view(m.dtype).view(m.shape)) for m in metas]


def send(group, flat: torch.Tensor) -> None:
    """Trainer side: one bucket to every member."""
    group.broadcast(flat, 0).wait()


def receive(group, metas: list[TensorMeta], device: torch.device) -> list[tuple[str, torch.Tensor]]:
    """Worker side: the bucket ``metas`` describes, checked."""
    flat = torch.empty(-(-(metas[-1].offset + metas[-1].nbytes) // ALIGN) * ALIGN, dtype=torch.uint8, device=device)
    group.broadcast(flat, 0).wait()
    return unpack(metas, flat)
