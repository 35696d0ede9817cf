"""Policy-side config sections: model, parallel layout, optimizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from megatron_grpo.config.loader import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    hf_config: str = ""
    """Path to a Hugging Face ``config.json`` (or the directory holding it) describing the architecture."""
    tokenizer: str = ""
    """Tokenizer directory (HF format). Its vocabulary must fit the model's ``vocab_size``."""
    hf_checkpoint: str | None = None
    """HF directory with safetensors to start from; ``None`` means random init (tiny runs, tests)."""
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Parameter/compute dtype of the policy. The reference run trains in fp32."""
    transformer_impl: Literal["auto", "local", "transformer_engine"] = "auto"
    """Layer implementation: ``auto`` = Transformer Engine on GPU when importable, Megatron local otherwise."""
    recompute: Literal["none", "full", "selective"] = "none"
    """Activation recomputation; ``full`` recomputes every layer in backward (lowest memory)."""
    make_vocab_size_divisible_by: int = 128
    """Embedding rows are padded to a multiple of this times TP (padding is dropped on export)."""
    moe_aux_loss_coef: float | None = None
    """MoE models: load-balancing auxiliary loss coefficient; ``None`` takes the HF config's
    ``router_aux_loss_coef``, 0 turns it off. It weighs the token-weighted mean over the step's
    micro-batches of Megatron's switch load-balancing loss (1.0 when every expert gets its share)."""

    def validate(self) -> None:
        if not self.hf_config:
            raise ConfigError("hf_config: required (path to a HF config.json)")
        if self.make_vocab_size_divisible_by < 1:
            raise ConfigError("make_vocab_size_divisible_by: must be >= 1")
        if self.moe_aux_loss_coef is not None and self.moe_aux_loss_coef < 0:
            raise ConfigError(f"moe_aux_loss_coef: must be >= 0, got {self.moe_aux_loss_coef}")


@dataclass(frozen=True)
class ParallelConfig:
    tensor: int = 1
    """Tensor-parallel size (within a node)."""
    pipeline: int = 1
    """Pipeline-parallel size (layers split across stages)."""
    virtual_pipeline: int | None = None
    """Interleaved pipeline: model chunks per stage (``None`` = not interleaved)."""
    expert: int = 1
    """Expert-parallel size (MoE): each EP rank holds num_experts / expert routed experts; carved out of
    the data-parallel ranks, tokens reach their experts by all-to-all."""
    expert_tensor: int | None = None
    """Tensor-parallel size inside each routed expert (Megatron's ETP); ``None``: the same as ``tensor``
    (Megatron's default); 1 keeps experts whole and lets ``expert`` span the TP ranks too."""
    sequence_parallel: bool = False
    """Split norms/dropout activations along the sequence across the TP group (needs tensor > 1)."""
    distributed_optimizer: bool = True
    """Shard optimizer state (and fp32 master weights) across data-parallel ranks."""
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """torch.distributed backend; ``auto`` = nccl with CUDA, gloo otherwise."""

    @property
    def expert_tensor_size(self) -> int:
        return self.tensor if self.expert_tensor is None else self.expert_tensor

    def validate(self) -> None:
        for name in ("tensor", "pipeline", "expert", "expert_tensor"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.sequence_parallel and self.tensor == 1:
            raise ConfigError("sequence_parallel: needs tensor > 1")
        if self.virtual_pipeline is not None and (self.virtual_pipeline < 2 or self.pipeline < 2):
            raise ConfigError("virtual_pipeline: needs pipeline >= 2 and virtual_pipeline >= 2")


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with decoupled weight decay (verl's default optimizer)."""

    lr: float = 1e-6
    """Peak learning rate (reference: 1e-6)."""
    min_lr: float = 0.0
    """Final learning rate for cosine decay."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """verl's default: constant after warmup."""
    warmup_steps: int = 0
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 disables)."""

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        if not 0 <= self.adam_beta1 < 1 or not 0 <= self.adam_beta2 < 1:
            raise ConfigError("adam_beta1/adam_beta2: must be in [0, 1)")
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ConfigError("warmup_steps, grad_clip and weight_decay must be >= 0")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"min_lr: must be in [0, lr = {self.lr}], got {self.min_lr}")
        if self.adam_eps <= 0:
            raise ConfigError(f"adam_eps: must be > 0 (it keeps Adam's denominator off zero), got {self.adam_eps}")
