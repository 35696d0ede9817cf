"""Qwen2 / Qwen2.5 dense, Qwen2.5-Math included (``Qwen2ForCausalLM``): GQA with a bias on q, k and v,
no qk-norm, SwiGLU, RMSNorm."""

from __future__ import annotations

from typing import Any

from megatron_grpo.families import decoder, qwen3
from megatron_grpo.families.spec import Family, ModelArch, Rule

ARCHITECTURE = "Qwen2ForCausalLM"


def parse(cfg: dict[str, Any], where: str) -> ModelArch:
    decoder.require(cfg, qwen3.REQUIRED, where, ARCHITECTURE)
    decoder.refuse(cfg, decoder.common_unsupported(cfg), where, "dense Qwen2 with full attention")
    return ModelArch(architecture=ARCHITECTURE, qk_layernorm=False, qkv_bias=True, **decoder.base_fields(cfg))


def rules(arch: ModelArch) -> tuple[Rule, ...]:
    return qwen3.rules(arch)  # the same table: the bias and qk-norm rules follow the arch's flags


FAMILY = Family(ARCHITECTURE, parse, rules, qwen3.layer_layout, decoder.swiglu_rmsnorm)
