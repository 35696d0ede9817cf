"""Pieces shared by the Llama-style decoder families: rope attention with GQA (optional QKV bias and
qk-norm), a SwiGLU MLP dense or routed over experts, RMSNorm. A family composes them; none of them knows
a family."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from megatron_grpo.config import ConfigError
from megatron_grpo.families.spec import ModelArch, Rule, Shape

L, A = "decoder.layers.{i}.", "model.layers.{i}."


def require(cfg: dict[str, Any], fields: tuple[str, ...], where: str, architecture: str) -> None:
    missing = [k for k in fields if cfg.get(k) is None]
    if missing:
        raise ConfigError(f"{where}: missing required field '{missing[0]}' for {architecture}")


def refuse(cfg: dict[str, Any], unsupported: dict[str, bool], where: str, what: str) -> None:
    """Raise naming the first config field whose value this family cannot train faithfully."""
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ConfigError(f"{where}: field '{bad[0]}' = {cfg.get(bad[0])!r} is not supported ({what})")


def common_unsupported(cfg: dict[str, Any]) -> dict[str, bool]:
    rope = cfg.get("rope_parameters") or {}  # transformers >= 5 nests rope_theta/rope_type here
    return {
        "rope_scaling": cfg.get("rope_scaling") not in (None, {}),
        "rope_parameters": rope.get("rope_type", "default") != "default",
        "use_sliding_window": bool(cfg.get("use_sliding_window")),
        "hidden_act": cfg.get("hidden_act", "silu") != "silu",
    }


def base_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    """ModelArch fields every decoder family reads the same way."""
    rope = cfg.get("rope_parameters") or {}
    heads = cfg["num_attention_heads"]
    return dict(
        hidden_size=cfg["hidden_size"],
        num_layers=cfg["num_hidden_layers"],
        num_attention_heads=heads,
        num_query_groups=cfg["num_key_value_heads"],
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        ffn_hidden_size=cfg["intermediate_size"],
        vocab_size=cfg["vocab_size"],
        max_position_embeddings=cfg["max_position_embeddings"],
        rope_theta=float(cfg.get("rope_theta") or rope.get("rope_theta") or 10000.0),
        norm_eps=float(cfg["rms_norm_eps"]),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        init_std=float(cfg.get("initializer_range", 0.02)),
    )


# ---- mapping rules ----------------------------------------------------------------------------------


def embedding_rules(arch: ModelArch) -> list[Rule]:
    return [Rule("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), "vocab")]


def attention_rules(arch: ModelArch) -> list[Rule]:
    norm = (A + "input_layernorm.weight",)
    qkv = tuple(A + f"self_attn.{p}_proj." for p in "qkv")
    rules = [
        # Local spec keeps norms as modules; the TE spec fuses them into the following linear.
        Rule(L + "input_layernorm.weight", norm, "replicated"),
        Rule(L + "self_attention.linear_qkv.layer_norm_weight", norm, "replicated"),
        Rule(L + "self_attention.linear_qkv.weight", tuple(p + "weight" for p in qkv), "qkv"),
        Rule(L + "self_attention.linear_proj.weight", (A + "self_attn.o_proj.weight",), "row"),
    ]
    if arch.qkv_bias:
        rules.append(Rule(L + "self_attention.linear_qkv.bias", tuple(p + "bias" for p in qkv), "qkv"))
    if arch.qk_layernorm:
        rules += [Rule(L + "self_attention.q_layernorm.weight", (A + "self_attn.q_norm.weight",), "replicated"),
                  Rule(L + "self_attention.k_layernorm.weight", (A + "self_attn.k_norm.weight",), "replicated")]
    return rules


def dense_mlp_rules(arch: ModelArch) -> list[Rule]:
    norm = (A + "post_attention_layernorm.weight",)
    return [
        Rule(L + "pre_mlp_layernorm.weight", norm, "replicated"),
        Rule(L + "mlp.linear_fc1.layer_norm_weight", norm, "replicated"),
        Rule(L + "mlp.linear_fc1.weight", (A + "mlp.gate_proj.weight", A + "mlp.up_proj.weight"), "glu"),
        Rule(L + "mlp.linear_fc2.weight", (A + "mlp.down_proj.weight",), "row"),
    ]


def moe_mlp_rules(arch: ModelArch) -> list[Rule]:
    """Routed experts: Megatron's SequentialMLP (local spec) names each expert a module; TE's grouped
    GEMM (``TEGroupedMLP``) suffixes the weight with the expert's index. The MoE norm is never fused into
    a linear, but the local spec checkpoints it under the fused name (``linear_fc1.layer_norm_weight``)."""
    expert = A + "mlp.experts.{e}."
    fc1, fc2 = (expert + "gate_proj.weight", expert + "up_proj.weight"), (expert + "down_proj.weight",)
    norm = (A + "post_attention_layernorm.weight",)
    return [
        Rule(L + "pre_mlp_layernorm.weight", norm, "replicated"),
        Rule(L + "mlp.linear_fc1.layer_norm_weight", norm, "replicated"),
        Rule(L + "mlp.router.weight", (A + "mlp.gate.weight",), "replicated"),
        Rule(L + "mlp.experts.local_experts.{e}.linear_fc1.weight", fc1, "glu"),
        Rule(L + "mlp.experts.local_experts.{e}.linear_fc2.weight", fc2, "row"),
        Rule(L + "mlp.experts.linear_fc1.weight{e}", fc1, "glu"),
        Rule(L + "mlp.experts.linear_fc2.weight{e}", fc2, "row"),
    ]


def output_rules(arch: ModelArch) -> list[Rule]:
    rules = [Rule("decoder.final_layernorm.weight", ("model.norm.weight",), "replicated")]
    if arch.tie_word_embeddings:
        rules.append(Rule("output_layer.weight", ("model.embed_tokens.weight",), "vocab", export=False))
    else:
        rules.append(Rule("output_layer.weight", ("lm_head.weight",), "vocab"))
    return rules


# ---- HF layout per layer -------------------------------------------------------------------------------


def attention_layout(arch: ModelArch) -> dict[str, Shape]:
    h, d = arch.hidden_size, arch.head_dim
    q, kv = arch.num_attention_heads * d, arch.num_query_groups * d
    out: dict[str, Shape] = {"input_layernorm.weight": (h,)}
    projections = (("q", q), ("k", kv), ("v", kv))  # the order of Megatron's fused QKV, weights then biases
    out.update({f"self_attn.{proj}_proj.weight": (rows, h) for proj, rows in projections})
    if arch.qkv_bias:
        out.update({f"self_attn.{proj}_proj.bias": (rows,) for proj, rows in projections})
    if arch.qk_layernorm:
        out.update({"self_attn.q_norm.weight": (d,), "self_attn.k_norm.weight": (d,)})
    out["self_attn.o_proj.weight"] = (h, q)
    out["post_attention_layernorm.weight"] = (h,)
    return out


def dense_mlp_layout(arch: ModelArch) -> dict[str, Shape]:
    h, f = arch.hidden_size, arch.ffn_hidden_size
    return {"mlp.gate_proj.weight": (f, h), "mlp.up_proj.weight": (f, h), "mlp.down_proj.weight": (h, f)}


def moe_mlp_layout(arch: ModelArch) -> dict[str, Shape]:
    """The router, then expert by expert (what ``save_pretrained`` writes; ``{e}`` expands 0..E-1)."""
    h, f = arch.hidden_size, arch.moe_ffn_hidden_size
    return {"mlp.gate.weight": (arch.num_experts, h), "mlp.experts.{e}.gate_proj.weight": (f, h),
            "mlp.experts.{e}.up_proj.weight": (f, h), "mlp.experts.{e}.down_proj.weight": (h, f)}


# ---- Megatron choices -----------------------------------------------------------------------------------


def swiglu_rmsnorm(arch: ModelArch) -> dict[str, Any]:
    return dict(normalization="RMSNorm", gated_linear_unit=True, activation_func=F.silu, add_bias_linear=False,
                add_qkv_bias=arch.qkv_bias, qk_layernorm=arch.qk_layernorm)


def softmax_topk_routing(arch: ModelArch) -> dict[str, Any]:
    """Softmax over all experts, then top-k. Megatron's default (top-k of the logits, softmax over the k)
    equals that renormalised, i.e. ``norm_topk_prob``; without renormalisation it must take the softmax
    first (``moe_router_pre_softmax``). No capacity: no token is ever dropped. (The load-balancing loss is
the trainer's choice: ``model.builder``.)"""
    return dict(
        num_moe_experts=arch.num_experts,
        moe_router_topk=arch.moe_topk,
        moe_ffn_hidden_size=arch.moe_ffn_hidden_size,
        moe_router_score_function="softmax",
        moe_router_pre_softmax=not arch.norm_topk_prob,
        moe_expert_capacity_factor=None,
        moe_router_dtype="fp32",  # HF routes in fp32 too; a bf16 softmax flips near-tied experts
    )
