"""Every patch this project applies to torch and Megatron-Core (checked against torch 2.13, megatron-core
0.16.1), grouped by the condition that needs it; each says what it fixes. ``apply(kind)`` runs once per
process from ``platform.setup_platform``. On CUDA with Transformer Engine nothing here changes anything.

* no CUDA (``cpu``, ``meta``): Megatron's ``device="cuda"``, ``.cuda()`` and ``torch.cuda.*`` calls land on
  the platform's device;
* no Transformer Engine / apex: the local layers' gaps (sequence-parallel norms, the grad-norm fallback);
* the ``meta`` stand-in: what cannot run on data-less tensors under a fake process group;
* every platform: Megatron's checkpoint writer leaves no process behind a killed trainer (its manager, and
  every process it forks: ``children.forked_children_die_with_parent``).
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.managers import SyncManager

import torch
from torch.overrides import TorchFunctionMode

from megatron_grpo.children import die_with_parent, forked_children_die_with_parent
from megatron_grpo.platform import FAKE_BACKEND

_TYPE_PREFIXES = ("torch.meta.", "torch.")


def apply(kind: str) -> None:
    _checkpoint_writer_manager_dies_with_its_process()
    forked_children_die_with_parent()
    _allow_sequence_parallel_torch_norm()
    _device_side_grad_norm()
    _router_gemm_without_te()
    if kind == "cuda":
        return
    target = torch.device(kind)
    _no_cuda(target)
    if kind == "meta":
        _standin()
    _alltoall_dispatcher_on_host()
    _DeviceRedirect(target).__enter__()  # stays active for the process lifetime


# ---- every platform -------------------------------------------------------------------------------------


def _checkpoint_writer_manager_dies_with_its_process() -> None:
    """Megatron's multi-threaded checkpoint writer (``filesystem_async``) collects its results through a queue
    of a ``multiprocessing.Manager`` it starts on first use and never shuts down. A trainer killed by SIGKILL
    left that manager's server process (~275 MB, ``Server.serve_forever``) running. The same queue, from a
    manager whose server is killed when the process that started it dies."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    def results_queue():
        if filesystem_async._results_queue is None:
            manager = SyncManager(ctx=mp.get_context("spawn"))
            manager.start(initializer=die_with_parent)
            filesystem_async._results_queue = manager.Queue()  # the proxy keeps the manager alive
        return filesystem_async._results_queue

    filesystem_async._get_write_results_queue = results_queue


# ---- no CUDA ------------------------------------------------------------------------------------------


def _is_cuda_device(dev) -> bool:
    if isinstance(dev, torch.device):
        return dev.type == "cuda"
    if isinstance(dev, str):
        return dev.startswith("cuda")
    return isinstance(dev, int) and not isinstance(dev, bool)


def _cuda_type_name(name: str) -> str:
    for prefix in _TYPE_PREFIXES:
        if name.startswith(prefix) and not name.startswith("torch.cuda."):
            return "torch.cuda." + name.removeprefix(prefix)
    return name


class _DeviceRedirect(TorchFunctionMode):
    """Maps ``device="cuda"``, ``.cuda()`` and ``.to("cuda")`` onto ``target`` and makes ``Tensor.type()``
    report CUDA type names.

    Fixes: ``torch.tensor(..., device='cuda')`` in optimizer.py, clip_grads.py and
    param_and_grad_buffer.py ("Torch not compiled with CUDA enabled"); ``p.cuda()`` in optimizer state
    loading; ``param.type() == 'torch.cuda.FloatTensor'`` asserts in the (distributed) optimizer and
    clip_grads ("Wrapped parameters must be one of torch.cuda.FloatTensor ..."); the default causal mask
    (transformer/utils.py) built with ``device="cuda"``. (Autograd runs backward without function modes:
    nothing Megatron does in a backward pass needs this.)
    """

    def __init__(self, target: torch.device):
        super().__init__()
        self.target = target

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0].to(self.target)
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            return _cuda_type_name(func(*args))
        if _is_cuda_device(kwargs.get("device")):
            kwargs = {**kwargs, "device": self.target}
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda_device(args[1]):
            args = (args[0], self.target, *args[2:])
        return func(*args, **kwargs)


def _no_cuda(target: torch.device) -> None:
    # rotary embedding and buffers call `.to(device=torch.cuda.current_device())`: "no CUDA GPUs".
    torch.cuda.current_device = lambda: target if target.type == "meta" else "cpu"
    # dist_checkpointing.save and DDP helpers call torch.cuda.synchronize/empty_cache: no-ops here.
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.empty_cache = lambda *a, **k: None
    from megatron.core import tensor_parallel
    from megatron.core.tensor_parallel import random

    # The CUDA RNG tracker raises "cuda rng state model-parallel-rng is not added" and
    # model_parallel_cuda_manual_seed needs CUDA; the inference tracker works without.
    tensor_parallel.random.initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)
    # Activation recompute saves and restores "the CUDA RNG" around each recomputed layer
    # (torch.cuda.random.get_rng_state: "Torch not compiled with CUDA enabled"): here the device's RNG
    # is the host generator.
    random._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    random._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)


def _alltoall_dispatcher_on_host() -> None:
    # The MoE all-to-all dispatcher moves its split sizes to the host on a side CUDA stream: its constructor
    # builds a torch.cuda.Stream ("Torch not compiled with CUDA enabled") and _maybe_dtoh_and_synchronize
    # records events on it. Without CUDA the sizes are host tensors already: the step is only the
    # conversion to the numpy arrays all_to_all_single takes as split sizes (a tensor there is refused).
    from megatron.core.transformer.moe.token_dispatcher import MoEAlltoAllTokenDispatcher as Dispatcher

    Dispatcher.cuda_dtoh_stream = "host"  # constructor: "if cuda_dtoh_stream is None: torch.cuda.Stream()"

    def splits_to_numpy(self, point, tokens_per_expert=None):
        if not self.drop_and_pad and point == self.cuda_dtoh_point:
            for name in ("input_splits", "output_splits", "output_splits_tp"):
                value = getattr(self, name)
                if torch.is_tensor(value):
                    setattr(self, name, value.numpy())
        return tokens_per_expert

    Dispatcher._maybe_dtoh_and_synchronize = splits_to_numpy


# ---- no Transformer Engine / apex -------------------------------------------------------------------------


def _router_gemm_without_te() -> None:
    # moe_utils imports te_general_gemm from TE's extension inside a try block and never defines it when TE
    # is absent; the router's gating linear then fails with NameError. None selects its torch.mm path.
    from megatron.core.transformer.moe import moe_utils

    if not hasattr(moe_utils, "te_general_gemm"):
        moe_utils.te_general_gemm = None


def _allow_sequence_parallel_torch_norm() -> None:
    # WrappedTorchNorm asserts "sequence parallel not supported by torch LayerNorm" (apex/TE norms are
    # absent). torch's norms are per position, hence exact on a sequence shard; their weight grads must be
    # summed over TP, which finalize_model_grads does for params marked `sequence_parallel`.
    from megatron.core.transformer import torch_norm

    original = torch_norm.WrappedTorchNorm.__new__
    if getattr(original, "_grpo_patched", False):
        return

    def new(cls, config, hidden_size, eps=1e-5, **kwargs):
        if not config.sequence_parallel:
            return original(cls, config, hidden_size, eps, **kwargs)
        norm_cls = torch.nn.RMSNorm if config.normalization == "RMSNorm" else torch.nn.LayerNorm
        norm = norm_cls(hidden_size, eps=eps)
        for param in norm.parameters():
            param.sequence_parallel = True
        return norm

    new._grpo_patched = True
    torch_norm.WrappedTorchNorm.__new__ = new


def _device_side_grad_norm() -> None:
    # Without TE/apex, clip_grads falls back to megatron.core.utils.local_multi_tensor_l2_norm, which
    # builds `torch.tensor(list of 0-dim norms)`: one device-to-host copy per gradient tensor on GPU, and
    # impossible on meta ("Tensor.item() cannot be called on meta tensors"). The same norm, on the device.
    from megatron.core import utils
    from megatron.core.optimizer import clip_grads

    if clip_grads.l2_norm_impl is not utils.local_multi_tensor_l2_norm:
        return

    def l2_norm(chunk_size, noop_flag, tensor_lists, per_tensor, *args):
        norms = torch.stack([torch.linalg.vector_norm(t.float()) for t in tensor_lists[0]])
        return torch.linalg.vector_norm(norms).reshape(1), None

    clip_grads.l2_norm_impl = l2_norm


# ---- the meta stand-in ---------------------------------------------------------------------------------------


_C10D_META = torch.library.Library("c10d", "IMPL")  # kept alive: the registrations live as long as it does


def _standin() -> None:
    import torch._dynamo
    import torch.distributed as dist
    from torch.distributed._meta_registrations import create_fakework

    # Megatron's jit_fuser is torch.compile on this torch (fused bias-dropout-add, SwiGLU); inductor cannot
    # partition meta graphs ("AOT Autograd failed to partition the joint forward-backward graph"). The same
    # functions run eagerly.
    torch._dynamo.config.disable = True
    # torch registers meta kernels for every c10d collective except the four coalesced ones (deprecated
    # there); DDP's grad sync runs reduce_scatter_tensor_coalesced_ inside _coalescing_manager
    # ("no fake impl or Meta kernel registered"). Register them the way torch registers the others.
    for op in ("allreduce_coalesced_", "allgather_coalesced_", "allgather_into_tensor_coalesced_",
               "reduce_scatter_tensor_coalesced_"):
        _C10D_META.impl(op, lambda *args: create_fakework(args, return_first_arg=False), "Meta")
    # Megatron builds gloo side groups next to every group (checkpoint metadata, optimizer); gloo needs a
    # real rendezvous. In the fake world they are fake groups too.
    new_group = dist.new_group

    def fake_new_group(*args, **kwargs):
        if kwargs.get("backend") == "gloo":
            kwargs["backend"] = FAKE_BACKEND
        return new_group(*args, **kwargs)

    dist.new_group = fake_new_group
    _p2p_shapes_from_schedule()
    _fused_rms_norm_on_meta()
    from megatron_grpo.platform import standin

    standin.install()


class _MetaFusedRMSNorm(torch.autograd.Function):
    """torch's fused RMSNorm as the GPU runs it, for data-less tensors: it keeps the input and the
    reciprocal RMS for backward (torch's ``_fused_rms_norm_backward`` meta kernel), nothing more."""

    @staticmethod
    def forward(ctx, x, normalized_shape, weight, eps):
        dims = len(normalized_shape)
        rstd = x.new_empty(x.shape[:-dims] + (1,) * dims, dtype=torch.float32)
        ctx.save_for_backward(x, weight, rstd)
        ctx.normalized_shape = list(normalized_shape)
        return torch.empty_like(x)

    @staticmethod
    def backward(ctx, grad):
        x, weight, rstd = ctx.saved_tensors
        dx, dw = torch.ops.aten._fused_rms_norm_backward(grad, x, ctx.normalized_shape, rstd, weight,
                                                         [True, weight is not None])
        return dx, None, dw, None


def _fused_rms_norm_on_meta() -> None:
    # On CUDA torch.rms_norm runs the fused kernel, which saves the input and 1/rms; on meta it decomposes
    # and also saves the normalised input, one more activation per norm (five per layer with qk-norm) than
    # a GPU holds. Patched in torch.nn.functional, so recomputed layers in backward take it too.
    import torch.nn.functional as F

    rms_norm = F.rms_norm

    def meta_aware(input, normalized_shape, weight=None, eps=None):
        if input.is_meta:
            return _MetaFusedRMSNorm.apply(input, tuple(normalized_shape), weight, eps)
        return rms_norm(input, normalized_shape, weight, eps)

    F.rms_norm = meta_aware


def _p2p_shapes_from_schedule() -> None:
    # With variable_seq_lengths, pipeline stages first exchange each activation's shape; the fake group
    # delivers none (empty(): "must be tuple of ints, not float"). A peer sends the shape of the same
    # micro-batch, and the stand-in's micro-batches all have the schedule's tensor_shape: use that.
    from megatron.core.pipeline_parallel.p2p_communication import P2PCommunicator

    communicate = P2PCommunicator._communicate

    def with_shape(self, *, tensor_shape, **kwargs):
        self._grpo_shape = tensor_shape
        return communicate(self, tensor_shape=tensor_shape, **kwargs)

    def shapes(self, tensor_send_next, tensor_send_prev, recv_prev, recv_next):
        return (self._grpo_shape if recv_prev else None, self._grpo_shape if recv_next else None)

    P2PCommunicator._communicate = with_shape
    P2PCommunicator._communicate_shapes = shapes
