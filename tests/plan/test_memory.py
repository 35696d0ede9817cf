"""plan.memory.MemoryTracker against hand-counted bytes of meta tensors."""

from __future__ import annotations

import torch

from megatron_grpo.plan.memory import MemoryTracker

MB = 2**20


def test_counts_each_storage_once_and_frees_it():
    tracker = MemoryTracker("meta")
    with tracker:
        a = torch.empty(MB // 4, device="meta")  # 1 MiB fp32
        view = a[10:]  # same storage
        b = torch.empty(MB, dtype=torch.uint8, device="meta")
        assert tracker.total == 2 * MB
        del a, view
        assert tracker.total == MB
        host = torch.empty(MB)  # not the traced device
        assert tracker.total == MB and host.numel() == MB
    assert b.numel() == MB


def test_peak_and_its_breakdown_by_phase():
    tracker = MemoryTracker("meta")
    with tracker:
        with tracker.in_phase("params"):
            w = torch.empty(MB, dtype=torch.uint8, device="meta")
        with tracker.in_phase("activations"):
            x = torch.empty(3 * MB, dtype=torch.uint8, device="meta")
            y = x.float()  # 12 MiB more while x lives
            del x, y
        with tracker.in_phase("logits"):
            z = torch.empty(2 * MB, dtype=torch.uint8, device="meta")
    assert tracker.peak == 16 * MB
    assert tracker.peak_breakdown == {"params": MB, "activations": 15 * MB}
    assert tracker.peak_phase == "activations"
    assert dict(tracker.live) == {"params": MB, "activations": 0, "logits": 2 * MB}
    assert tracker.category_peaks == {"params": MB, "activations": 15 * MB, "logits": 2 * MB}
    assert w.numel() + z.numel() == 3 * MB


def test_tag_refiles_by_identity():
    tracker = MemoryTracker("meta")
    with tracker:
        state = torch.zeros(MB, dtype=torch.uint8, device="meta")
        tracker.tag([state[:5]], "optimizer")  # a view finds its storage
    assert dict(tracker.live) == {"other": 0, "optimizer": MB}
