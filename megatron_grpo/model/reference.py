"""The frozen reference policy of the KL term: the initial weights, in the policy's own layout.

No second model is built. The reference is a host copy of this rank's shard of every weight, taken
before any checkpoint is loaded, so a resumed run's reference is again the initial model (as the
uninterrupted run's). For its log-probs it trades places with the policy's weights one tensor at a time
(``swapped_in``): the same modules, parallel layout, micro-batches and (MoE) replayed routing as the
update, and on GPU only one tensor's worth of extra device memory. Between uses it stays in host memory,
pinned on GPU so the swaps run as async copies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from megatron_grpo import platform


class ReferencePolicy:
    def __init__(self, model: list):
        self._params = [p for chunk in model for p in chunk.parameters()]
        self._host = [torch.empty(p.shape, dtype=p.dtype, pin_memory=platform.has_cuda()).copy_(p.detach())
                      for p in self._params]
        self._swapped = False

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._host)

    def _swap(self) -> None:
        with torch.no_grad():
            for param, host in zip(self._params, self._host, strict=True):
                live = param.detach().clone()
                param.copy_(host, non_blocking=True)
                host.copy_(live, non_blocking=True)
        platform.synchronize()

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model computes with the reference weights inside; the policy's come back bit-exact after."""
        if self._swapped:
            raise RuntimeError("the reference weights are already swapped in")
        self._swap()
        self._swapped = True
        try:
            yield
        finally:
            self._swap()
            self._swapped = False
