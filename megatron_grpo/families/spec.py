"""What a model family is: the architecture it parses, and the data the rest of the project reads from it.

``ModelArch`` is the architecture-neutral shape Megatron, the weight mapping and the planner need;
``Rule`` names one Megatron parameter and the HF tensors fused into it; ``Family`` bundles a parser, the
mapping table, the per-layer HF layout and the TransformerConfig choices of one ``architectures[0]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["replicated", "column", "row", "vocab", "qkv", "glu"]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class ModelArch:
    """Shape of a decoder-only transformer (dense, or with a routed-experts MLP in every layer)."""

    architecture: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_query_groups: int
    head_dim: int
    ffn_hidden_size: int
    vocab_size: int
    max_position_embeddings: int
    rope_theta: float
    norm_eps: float
    tie_word_embeddings: bool
    qk_layernorm: bool
    init_std: float
    qkv_bias: bool = False
    num_experts: int = 0
    """Routed experts per layer; 0 for a dense MLP."""
    moe_topk: int = 0
    moe_ffn_hidden_size: int = 0
    norm_topk_prob: bool = False
    """Renormalise the top-k routing probabilities to sum to 1 (Qwen3-MoE: true)."""
    router_aux_loss_coef: float = 0.0

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0


@dataclass(frozen=True)
class Rule:
    mcore: str              # Megatron name: "{i}" = GLOBAL layer index, "{e}" = GLOBAL expert index
    hf: tuple[str, ...]     # HF names fused into it, in fuse order (same placeholders)
    kind: Kind
    export: bool = True     # False for the last stage's copy of a tied embedding

    @property
    def expert(self) -> bool:
        """One routed expert's tensor: sharded over expert-tensor parallelism, owned by one EP rank."""
        return "{e}" in self.mcore


@dataclass(frozen=True)
class Family:
    """Everything one architecture contributes; ``families.register`` makes it usable everywhere."""

    architecture: str
    """``architectures[0]`` of the HF config, e.g. ``Qwen3ForCausalLM``."""
    parse: Callable[[dict[str, Any], str], ModelArch]
    """HF config dict (and where it came from, for messages) -> ModelArch; raises ConfigError."""
    rules: Callable[[ModelArch], tuple[Rule, ...]]
    """HF <-> Megatron mapping table (``convert.mapping`` is the engine that runs it)."""
    layer_layout: Callable[[ModelArch], dict[str, Shape]]
    """HF tensor name suffix (after ``model.layers.{i}.``, may hold ``{e}``) -> shape, in checkpoint order."""
    megatron: Callable[[ModelArch], dict[str, Any]]
    """TransformerConfig fields this family decides (norm, MLP, biases, routing)."""
    residual_outputs: tuple[str, ...] = ("self_attn.o_proj.weight", "down_proj.weight")
    """HF name suffixes initialised with Megatron's scaled init std / sqrt(2L) (random-init runs)."""
