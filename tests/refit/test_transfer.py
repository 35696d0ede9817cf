"""Bucket packing for the weight-transfer group: one flat byte buffer per bucket, checked per tensor."""

from __future__ import annotations

import pytest
import torch

from megatron_grpo.refit.transfer import TransferError, pack, unpack
from megatron_grpo.rollout.server import cpu_thread_bind


def _bucket() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [("a.weight", torch.randn(3, 5, generator=g)),
            ("b.weight", torch.randn(7, generator=g).to(torch.bfloat16)),  # 14 bytes: offsets not 4-aligned
            ("c.weight", torch.randn(2, 3, generator=g).t())]             # not contiguous


def test_a_bucket_round_trips_bit_exactly_through_one_buffer():
    bucket = _bucket()
    metas, flat = pack(bucket)
    assert flat.dtype == torch.uint8 and all(m.offset % 16 == 0 for m in metas)  # viewable as any dtype
    got = unpack(metas, flat.clone())
    assert [n for n, _ in got] == [n for n, _ in bucket]
    for (_, want), (_, have) in zip(bucket, got, strict=True):
        assert have.dtype == want.dtype and have.shape == want.shape and torch.equal(have, want)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_a_damaged_byte_names_its_tensor(index):
    metas, flat = pack(_bucket())
    flat[metas[index].offset + metas[index].nbytes - 1] ^= 0x01  # the tensor's last byte, one bit
    with pytest.raises(TransferError, match=rf"{metas[index].name}: damaged in transit"):
        unpack(metas, flat)


def test_cpu_thread_bind_gives_each_worker_its_own_cores():
    assert cpu_thread_bind(2, [0, 1]) == "0|1"
    assert cpu_thread_bind(2, [0, 1, 2, 3]) == "0-1|2-3"
    assert cpu_thread_bind(4, [0, 1]) == "0|1|0|1"  # fewer cores than workers: they share
