"""Qwen3-MoE (``Qwen3MoeForCausalLM``, e.g. Qwen3-30B-A3B): Qwen3's attention, and in every layer a
softmax top-k router over SwiGLU experts, no shared expert."""

from __future__ import annotations

from typing import Any

from megatron_grpo.families import decoder, qwen3
from megatron_grpo.families.spec import Family, ModelArch, Rule, Shape

ARCHITECTURE = "Qwen3MoeForCausalLM"
REQUIRED = (*qwen3.REQUIRED, "num_experts", "num_experts_per_tok", "moe_intermediate_size")


def parse(cfg: dict[str, Any], where: str) -> ModelArch:
    if cfg.get("num_experts") is None and cfg.get("num_local_experts") is not None:
        cfg = {**cfg, "num_experts": cfg["num_local_experts"]}  # transformers >= 5 writes this name
    decoder.require(cfg, REQUIRED, where, ARCHITECTURE)
    decoder.refuse(cfg, {
        **decoder.common_unsupported(cfg),
        "attention_bias": bool(cfg.get("attention_bias")),
        "decoder_sparse_step": cfg.get("decoder_sparse_step", 1) != 1,  # dense layers between MoE layers
        "mlp_only_layers": bool(cfg.get("mlp_only_layers")),
        "num_experts_per_tok": not 0 < cfg["num_experts_per_tok"] <= cfg["num_experts"],
    }, where, "Qwen3-MoE with an MoE MLP in every layer")
    return ModelArch(
        architecture=ARCHITECTURE, qk_layernorm=True, **decoder.base_fields(cfg),
        num_experts=cfg["num_experts"], moe_topk=cfg["num_experts_per_tok"],
        moe_ffn_hidden_size=cfg["moe_intermediate_size"], norm_topk_prob=bool(cfg.get("norm_topk_prob", False)),
        router_aux_loss_coef=float(cfg.get("router_aux_loss_coef", 0.0)),
    )


def rules(arch: ModelArch) -> tuple[Rule, ...]:
    return tuple(decoder.embedding_rules(arch) + decoder.attention_rules(arch) + decoder.moe_mlp_rules(arch)
                 + decoder.output_rules(arch))


def layer_layout(arch: ModelArch) -> dict[str, Shape]:
    return {**decoder.attention_layout(arch), **decoder.moe_mlp_layout(arch)}


def megatron(arch: ModelArch) -> dict[str, Any]:
    return {**decoder.swiglu_rmsnorm(arch), **decoder.softmax_topk_routing(arch)}


FAMILY = Family(ARCHITECTURE, parse, rules, layer_layout, megatron)
