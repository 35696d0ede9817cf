"""Trainer state out of accelerator memory while a colocated engine generates (verl's actor offload).

Megatron-Core's own buffer offload does the buffers: the gradient buffers are freed (they are zeroed
before every step anyway) and, with the distributed optimizer, the contiguous parameter buffer is copied
to pinned host memory. Megatron's optimizer offload (``MegatronOptimizer.offload_to_cpu``) is not used:
it moves every optimizer parameter, and with fp32 weights the distributed optimizer's parameters are
views of the model's own weight buffer, so they would cross PCIe twice more and come back as separate
device tensors (parameters / DP bytes more, for good). Here only what the optimizer owns moves: Adam's
moments, and master weights that are not views of a model parameter (the fp32 copies of 16-bit weights).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from megatron_grpo import platform


def _torch_optimizers(optimizer) -> list[torch.optim.Optimizer]:
    return [o.optimizer for o in getattr(optimizer, "chained_optimizers", [optimizer])
            if getattr(o, "optimizer", None) is not None]


def _owned_masters(optimizer, model: list) -> Iterator[torch.Tensor]:
    """The optimizer's parameters that share no storage with the model's weights."""
    weights = {p.untyped_storage().data_ptr() for chunk in model for p in chunk.parameters()}
    for opt in _torch_optimizers(optimizer):
        for group in opt.param_groups:
            yield from (p for p in group["params"] if p.untyped_storage().data_ptr() not in weights)


def _to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cpu":  # pinned, so the copy runs asynchronously on GPU; always a copy
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=platform.has_cuda())
        return host.copy_(tensor, non_blocking=True)
    return tensor.to(device, non_blocking=True)


class TrainerOffload:
    """Moves a policy's gradients, optimizer state and (with the distributed optimizer) parameters to the
    host and back. ``params=False`` keeps the weights on the device (a refit still reads them)."""

    def __init__(self, model: list, optimizer):
        self.model, self.optimizer = model, optimizer
        self.grads_off = self.optimizer_off = self.params_off = False

    @property
    def buffers(self) -> list:
        return [b for chunk in self.model for b in chunk.buffers + chunk.expert_parallel_buffers]

    def offload(self, params: bool) -> None:
        if not self.grads_off:
            for chunk in self.model:
                chunk.offload_grad_buffers(synchronize=False, empty_cache=False)
            self.grads_off = True
        if not self.optimizer_off:
            self._move_optimizer(torch.device("cpu"))
            self.optimizer_off = True
        if params and not self.params_off:
            for buffer in self.buffers:
                buffer.offload_to_cpu(move_params=True, move_grads=False)
            self.params_off = True
        platform.synchronize()
        platform.empty_cache()

    def onload(self) -> None:
        if self.params_off:
            for buffer in self.buffers:
                buffer.reload_from_cpu(move_params=True, move_grads=False)
            self.params_off = False
        if self.optimizer_off:
            self._move_optimizer(platform.device())
            self.optimizer_off = False
        if self.grads_off:
            for chunk in self.model:
                chunk.restore_grad_buffers(synchronize=False)
            self.grads_off = False
        platform.synchronize()

    @property
    def params_resident(self) -> bool:
        """Whether the parameters stay on the device when offloaded (no contiguous buffer to move)."""
        return any(b.param_data is None for b in self.buffers)

    def _move_optimizer(self, device: torch.device) -> None:
        for opt in _torch_optimizers(self.optimizer):
            for state in opt.state.values():
                for key, value in state.items():
                    if isinstance(value, torch.Tensor) and value.dim() > 0:  # the step count stays put
                        state[key] = _to(value, device)
        for master in _owned_masters(self.optimizer, self.model):
            master.data = _to(master.data, device)
