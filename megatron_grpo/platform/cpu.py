"""CPU patches for megatron-core (checked against 0.16.1). Applied once, only when CUDA is absent.

Each patch names the failure it prevents. Everything else runs unpatched.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

_CUDA_TYPE_NAMES = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
}


def _is_cuda_device(dev) -> bool:
    if isinstance(dev, torch.device):
        return dev.type == "cuda"
    if isinstance(dev, str):
        return dev.startswith("cuda")
    return isinstance(dev, int) and not isinstance(dev, bool)


class _CudaToCpuMode(TorchFunctionMode):
    """Maps ``device="cuda"``/``.cuda()``/``Tensor.type()`` onto CPU.

    Fixes: ``torch.tensor(..., device='cuda')`` in optimizer.py, clip_grads.py and
    param_and_grad_buffer.py ("Torch not compiled with CUDA enabled"); ``p.cuda()`` in optimizer
    state loading; ``param.type() == 'torch.cuda.FloatTensor'`` asserts in the (distributed) optimizer
    and clip_grads ("Wrapped parameters must be one of torch.cuda.FloatTensor ..."); the default
    causal mask (transformer/utils.py) built with ``device="cuda"``.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return _CUDA_TYPE_NAMES.get(name, name)
        if _is_cuda_device(kwargs.get("device")):
            kwargs = {**kwargs, "device": "cpu"}
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda_device(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


def apply() -> None:
    # rotary embedding / buffers call `.to(device=torch.cuda.current_device())`: "no CUDA GPUs".
    torch.cuda.current_device = lambda: "cpu"
    # dist_checkpointing.save and DDP helpers call torch.cuda.synchronize/empty_cache: no-ops on CPU.
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.empty_cache = lambda *a, **k: None
    _allow_sequence_parallel_torch_norm()
    _CudaToCpuMode().__enter__()  # stays active for the process lifetime
    _reset_rng_tracker()


def _allow_sequence_parallel_torch_norm() -> None:
    # WrappedTorchNorm asserts "sequence parallel not supported by torch LayerNorm" (apex/TE norms are
    # absent on CPU). torch's norms are per position, hence exact on a sequence shard; their weight grads
    # must be summed over TP, which finalize_model_grads does for params marked `sequence_parallel`.
    from megatron.core.transformer import torch_norm

    original = torch_norm.WrappedTorchNorm.__new__

    def new(cls, config, hidden_size, eps=1e-5, **kwargs):
        if not config.sequence_parallel:
            return original(cls, config, hidden_size, eps, **kwargs)
        norm_cls = torch.nn.RMSNorm if config.normalization == "RMSNorm" else torch.nn.LayerNorm
        norm = norm_cls(hidden_size, eps=eps)
        for param in norm.parameters():
            param.sequence_parallel = True
        return norm

    torch_norm.WrappedTorchNorm.__new__ = new


def _reset_rng_tracker() -> None:
    # The CUDA RNG tracker raises "cuda rng state model-parallel-rng is not added" and
    # model_parallel_cuda_manual_seed needs CUDA; the inference tracker works on CPU.
    from megatron.core import tensor_parallel

    tensor_parallel.random.initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)
