"""Qwen3 dense (``Qwen3ForCausalLM``): GQA with qk-norm and no biases, SwiGLU, RMSNorm."""

from __future__ import annotations

from typing import Any

from megatron_grpo.families import decoder
from megatron_grpo.families.spec import Family, ModelArch, Rule, Shape

ARCHITECTURE = "Qwen3ForCausalLM"
REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
            "vocab_size", "max_position_embeddings", "rms_norm_eps")


def parse(cfg: dict[str, Any], where: str) -> ModelArch:
    decoder.require(cfg, REQUIRED, where, ARCHITECTURE)
    decoder.refuse(cfg, {"num_experts": bool(cfg.get("num_experts")), **decoder.common_unsupported(cfg),
                         "attention_bias": bool(cfg.get("attention_bias"))}, where, "dense Qwen3")
    return ModelArch(architecture=ARCHITECTURE, qk_layernorm=True, **decoder.base_fields(cfg))


def rules(arch: ModelArch) -> tuple[Rule, ...]:
    return tuple(decoder.embedding_rules(arch) + decoder.attention_rules(arch) + decoder.dense_mlp_rules(arch)
                 + decoder.output_rules(arch))


def layer_layout(arch: ModelArch) -> dict[str, Shape]:
    return {**decoder.attention_layout(arch), **decoder.dense_mlp_layout(arch)}


FAMILY = Family(ARCHITECTURE, parse, rules, layer_layout, decoder.swiglu_rmsnorm)
