"""Buckets lent by handle (``refit.ipc``) to another process: the CPU twin of CUDA IPC (a shared-memory
segment), read in place by a process that did not inherit anything from the lender."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from multiprocessing import shared_memory
from pathlib import Path

import pytest
import torch

from megatron_grpo.refit import ipc, transfer

REPO = Path(__file__).resolve().parents[2]


def _bucket() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [("a.weight", torch.randn(3, 5, generator=g)), ("b.bias", torch.randn(7, generator=g).to(torch.bfloat16)),
            ("c.weight", torch.randn(4, 4, generator=g))]


def _borrow() -> None:
    """In a fresh interpreter, as an engine process is (its own resource tracker, nothing inherited): open
    the handle read from stdin, check and unpack the bucket, write what it holds to stdout."""
    metas, handle = pickle.load(sys.stdin.buffer)
    try:
        borrowed = ipc.Borrowed(handle, torch.device("cpu"))
        try:
            result = ("ok", [(n, t.clone()) for n, t in transfer.unpack(metas, borrowed.tensor)])
        finally:
            borrowed.close()
    except transfer.TransferError as exc:
        result = ("damaged", str(exc))
    buf = io.BytesIO()
    torch.save(result, buf)
    sys.stdout.buffer.write(buf.getvalue())


def _in_another_process(metas, handle):
    proc = subprocess.run([sys.executable, "-c", "from tests.refit.test_ipc import _borrow; _borrow()"],
                          input=pickle.dumps((metas, handle)), capture_output=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert b"leaked" not in proc.stderr, proc.stderr.decode()  # the borrower must not own the segment
    return torch.load(io.BytesIO(proc.stdout), weights_only=False)


def test_a_lent_bucket_is_read_whole_by_another_process_and_released():
    bucket = _bucket()
    metas, flat = transfer.pack(bucket)
    lent = ipc.lend(flat)
    try:
        status, got = _in_another_process(metas, lent.handle)
    finally:
        lent.release()
    assert status == "ok"
    assert [n for n, _ in got] == [n for n, _ in bucket]
    assert all(torch.equal(a, b) and a.dtype == b.dtype for (_, a), (_, b) in zip(got, bucket, strict=True))
    with pytest.raises(FileNotFoundError):  # released: the segment is gone, nothing leaks in /dev/shm
        shared_memory.SharedMemory(name=lent.handle.payload[0])


def test_a_byte_changed_after_lending_is_named_and_nothing_is_taken():
    metas, flat = transfer.pack(_bucket())
    lent = ipc.lend(flat)
    try:
        segment = shared_memory.SharedMemory(name=lent.handle.payload[0])
        segment.buf[metas[2].offset + 1] ^= 0x10  # a flipped bit in c.weight
        segment.close()
        status, message = _in_another_process(metas, lent.handle)
    finally:
        lent.release()
    assert status == "damaged" and message.startswith("c.weight: damaged in transit")


def test_a_cuda_handle_from_another_gpu_is_refused(monkeypatch):
    """A worker must sit on its trainer rank's GPU; a handle of another GPU would read the wrong memory."""
    monkeypatch.setattr(ipc, "_gpu_uuid", lambda device: "GPU-bbbb")
    handle = ipc.Handle("cuda", "GPU-aaaa", 16, (None, ()))
    with pytest.raises(ValueError, match="lent on GPU GPU-aaaa reached a worker on GPU GPU-bbbb"):
        ipc.Borrowed(handle, torch.device("cuda", 0))
