"""The Megatron-Core policy as the trainer sees it: log-probs, one optimizer step, weights out."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from megatron_grpo import platform
from megatron_grpo.config import ModelConfig, OptimizerConfig, ParallelConfig
from megatron_grpo.convert.weights import load_hf_weights, stage_hf_tensors
from megatron_grpo.families import ModelArch, padded_vocab_size
from megatron_grpo.model.builder import aux_loss_coef, build_model, build_optimizer, wrap_ddp
from megatron_grpo.model.forward import Batch, Entropy, LossFn, forward_logprobs, train_micro_batches
from megatron_grpo.model.init import RandomHFWeights
from megatron_grpo.model.offload import TrainerOffload
from megatron_grpo.platform import DTYPES


class MegatronPolicy:
    """GPTModel chunks of this rank wrapped in DDP, with the (distributed) optimizer and LR schedule."""

    def __init__(self, arch: ModelArch, model_cfg: ModelConfig, parallel: ParallelConfig,
                 optim: OptimizerConfig, total_steps: int, hf_weights: Mapping[str, torch.Tensor] | None = None,
                 seed: int = 0):
        """``hf_weights`` (e.g. ``HFCheckpoint``) or, without them, ``RandomHFWeights(arch, seed)``: the
        same initial model under every parallel layout."""
        self.arch = arch
        self.dtype = DTYPES[model_cfg.dtype]
        self.aux_loss_coef = aux_loss_coef(arch, model_cfg)
        chunks = build_model(arch, model_cfg, parallel)
        # Before DDP/optimizer: they copy parameters into their own buffers / fp32 masters.
        padded = padded_vocab_size(arch.vocab_size, model_cfg.make_vocab_size_divisible_by, parallel.tensor)
        load_hf_weights(chunks, arch, hf_weights if hf_weights is not None else RandomHFWeights(arch, seed), padded)
        self.model = wrap_ddp(chunks, parallel)
        self.optimizer, self.scheduler = build_optimizer(self.model, optim, model_cfg, parallel, total_steps)
        self._offload = TrainerOffload(self.model, self.optimizer)
        self.offloads = platform.has_cuda()
        """Whether ``offload`` moves anything: on CPU the host is the device."""

    def logprobs(self, micro_batches: list[Batch], temperature: float = 1.0,
                 with_entropy: bool = False) -> list[Batch]:
        for chunk in self.model:
            chunk.eval()
        return forward_logprobs(self.model, micro_batches, self.arch.vocab_size, temperature, with_entropy)

    def train_step(self, micro_batches: list[Batch], loss_fn: LossFn, temperature: float = 1.0,
                   entropy: Entropy = "metric") -> tuple[dict[str, float], bool, float]:
        """(metrics summed over micro-batches and DP ranks, update applied, grad norm)."""
        for chunk in self.model:
            chunk.train()
        metrics, applied, grad_norm = train_micro_batches(
            self.model, self.optimizer, micro_batches, self.arch.vocab_size, temperature, loss_fn, entropy,
            self.aux_loss_coef,
        )
        if applied:
            self.scheduler.step(increment=1)
        return metrics, applied, grad_norm

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def offload(self, params: bool = True) -> None:
        """Gradients, optimizer state and (``params``, with the distributed optimizer) weights to host
        memory, for a colocated engine to use the device; ``onload`` brings them back."""
        if self.offloads:
            self._offload.offload(params)

    def onload(self) -> None:
        if self.offloads:
            self._offload.onload()

    def hf_tensors(self, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """This pipeline stage's weights as full HF-named tensors (collective over TP)."""
        return stage_hf_tensors(self.model, self.arch, dtype)
