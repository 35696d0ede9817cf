"""HF <-> Megatron-Core weight mapping: one declarative table per architecture, pure tensor functions.

The same table serves the HF import, the Megatron->HF export and the online refit into vLLM.
Three layers of the problem are kept apart:

* naming: ``Rule`` patterns with ``{i}`` for the GLOBAL layer index (PP offsets are resolved by the caller);
* fusing: Megatron fuses q/k/v per query group (``qkv``) and gate/up (``glu``); ``fuse``/``split`` convert
  between the HF tensors and one FULL (unsharded, unpadded) Megatron tensor;
* sharding: ``shard`` slices a full tensor for one TP rank, including vocab padding and the per-rank
  [gate_r; up_r] layout of a gated linear unit; ``split`` of a shard gives that rank's slice of each HF
  tensor, so the way back gathers HF tensors directly (``gather_dim``, ``unpad``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

import torch

from megatron_grpo.model.arch import ModelArch

Kind = Literal["replicated", "column", "row", "vocab", "qkv", "glu"]


@dataclass(frozen=True)
class Rule:
    mcore: str              # Megatron name, "{i}" = global layer index
    hf: tuple[str, ...]     # HF names fused into it, in fuse order
    kind: Kind
    export: bool = True     # False for the last stage's copy of a tied embedding


@dataclass(frozen=True)
class Match:
    rule: Rule
    layer: int | None       # global layer index, None for non-layer tensors

    @property
    def hf_names(self) -> tuple[str, ...]:
        return tuple(n.format(i=self.layer) for n in self.rule.hf)


def _qwen3_rules(arch: ModelArch) -> tuple[Rule, ...]:
    L, A = "decoder.layers.{i}.", "model.layers.{i}."
    input_norm = (A + "input_layernorm.weight",)
    mlp_norm = (A + "post_attention_layernorm.weight",)
    rules = [
        Rule("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), "vocab"),
        # Local spec keeps norms as modules; the TE spec fuses them into the following linear.
        Rule(L + "input_layernorm.weight", input_norm, "replicated"),
        Rule(L + "self_attention.linear_qkv.layer_norm_weight", input_norm, "replicated"),
        Rule(L + "self_attention.linear_qkv.weight",
             (A + "self_attn.q_proj.weight", A + "self_attn.k_proj.weight", A + "self_attn.v_proj.weight"), "qkv"),
        Rule(L + "self_attention.q_layernorm.weight", (A + "self_attn.q_norm.weight",), "replicated"),
        Rule(L + "self_attention.k_layernorm.weight", (A + "self_attn.k_norm.weight",), "replicated"),
        Rule(L + "self_attention.linear_proj.weight", (A + "self_attn.o_proj.weight",), "row"),
        Rule(L + "pre_mlp_layernorm.weight", mlp_norm, "replicated"),
        Rule(L + "mlp.linear_fc1.layer_norm_weight", mlp_norm, "replicated"),
        Rule(L + "mlp.linear_fc1.weight", (A + "mlp.gate_proj.weight", A + "mlp.up_proj.weight"), "glu"),
        Rule(L + "mlp.linear_fc2.weight", (A + "mlp.down_proj.weight",), "row"),
        Rule("decoder.final_layernorm.weight", ("model.norm.weight",), "replicated"),
    ]
    if arch.tie_word_embeddings:
        rules.append(Rule("output_layer.weight", ("model.embed_tokens.weight",), "vocab", export=False))
    else:
        rules.append(Rule("output_layer.weight", ("lm_head.weight",), "vocab"))
    return tuple(rules)


RULES = {"Qwen3ForCausalLM": _qwen3_rules}


class MappingError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def rules_for(arch: ModelArch) -> tuple[Rule, ...]:
    try:
        return RULES[arch.architecture](arch)
    except KeyError:
        raise MappingError(f"no weight mapping for architecture {arch.architecture!r}") from None


@functools.cache  # matched for every parameter of every refit
def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(\d+)") + "$")


def match_mcore(name: str, rules: tuple[Rule, ...]) -> Match:
    """Rule for a Megatron parameter name whose layer index is already global."""
    for rule in rules:
        m = _pattern(rule.mcore).match(name)
        if m:
            return Match(rule, int(m.group(1)) if m.groups() else None)
    raise MappingError(f"Megatron parameter '{name}' has no HF mapping")


def hf_layout(arch: ModelArch) -> dict[str, tuple[int, ...]]:
    """Every HF tensor name and shape the architecture implies (what an export must contain)."""
    h, d, f = arch.hidden_size, arch.head_dim, arch.ffn_hidden_size
    per_layer = {
        "input_layernorm.weight": (h,),
        "self_attn.q_proj.weight": (arch.num_attention_heads * d, h),
        "self_attn.k_proj.weight": (arch.num_query_groups * d, h),
        "self_attn.v_proj.weight": (arch.num_query_groups * d, h),
        "self_attn.q_norm.weight": (d,),
        "self_attn.k_norm.weight": (d,),
        "self_attn.o_proj.weight": (h, arch.num_attention_heads * d),
        "post_attention_layernorm.weight": (h,),
        "mlp.gate_proj.weight": (f, h),
        "mlp.up_proj.weight": (f, h),
        "mlp.down_proj.weight": (h, f),
    }
    out = {"model.embed_tokens.weight": (arch.vocab_size, h)}
    for i in range(arch.num_layers):
        out.update({f"model.layers.{i}.{k}": v for k, v in per_layer.items()})
    out["model.norm.weight"] = (h,)
    if not arch.tie_word_embeddings:
        out["lm_head.weight"] = (arch.vocab_size, h)
    return out


def stage_hf_layout(arch: ModelArch, layers: set[int] | range, first: bool, last: bool) -> dict[str, tuple[int, ...]]:
    """The HF tensors a pipeline stage exports (holding ``layers``, the embedding when ``first``, the final
    norm and output layer when ``last``), in ``hf_layout`` order: the order ``stage_hf_tensors`` streams."""
    names = set()
    for rule in rules_for(arch):
        if not rule.export:
            continue
        if "{i}" in rule.mcore:
            names.update(n.format(i=i) for i in layers for n in rule.hf)
        elif rule.mcore.startswith("embedding.") and first or not rule.mcore.startswith("embedding.") and last:
            names.update(rule.hf)
    return {name: shape for name, shape in hf_layout(arch).items() if name in names}


# ---- fusing: HF tensors <-> one full Megatron tensor ------------------------------------------------


def fuse(kind: Kind, tensors: list[torch.Tensor], arch: ModelArch) -> torch.Tensor:
    if kind == "qkv":
        q, k, v = tensors
        g, d = arch.num_query_groups, arch.head_dim
        qpg = arch.num_attention_heads // g
        h = q.shape[-1]
        return torch.cat([q.view(g, qpg * d, h), k.view(g, d, h), v.view(g, d, h)], dim=1).reshape(-1, h)
    if kind == "glu":
        return torch.cat(tensors, dim=0)
    (t,) = tensors
    return t


def split(kind: Kind, t: torch.Tensor, arch: ModelArch, tp: int = 1) -> list[torch.Tensor]:
    """Inverse of ``fuse``: the HF tensors in a full Megatron tensor (``tp`` 1), or, given one TP rank's
    shard, that rank's slice of each of them, which the ranks' slices concatenate along
    ``gather_dim(kind)`` to make. Vocab padding stays: see ``unpad``."""
    if kind == "qkv":
        g, d = arch.num_query_groups // tp, arch.head_dim
        qpg = arch.num_attention_heads // arch.num_query_groups
        grouped = t.view(g, (qpg + 2) * d, t.shape[-1])
        q, k, v = grouped.split([qpg * d, d, d], dim=1)
        return [x.reshape(-1, t.shape[-1]) for x in (q, k, v)]
    if kind == "glu":
        return list(t.chunk(2, dim=0))  # a shard is [gate_r; up_r]
    return [t]


def gather_dim(kind: Kind) -> int | None:
    """Dimension along which TP ranks' slices of an HF tensor concatenate; None: every rank has it all."""
    return {"replicated": None, "row": 1}.get(kind, 0)


def unpad(kind: Kind, full: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Drop the vocab padding rows (a view)."""
    return full[:vocab_size] if kind == "vocab" else full


# ---- sharding: full Megatron tensor <-> one TP rank's shard -----------------------------------------


def shard(kind: Kind, full: torch.Tensor, rank: int, size: int, padded_rows: int | None = None) -> torch.Tensor:
    """This TP rank's slice. ``vocab`` tensors are zero-padded to ``padded_rows`` first."""
    if kind == "replicated":
        return full
    if kind == "vocab":
        if padded_rows is None:
            raise ValueError("vocab shard needs padded_rows")
        pad = padded_rows - full.shape[0]
        full = torch.cat([full, full.new_zeros(pad, *full.shape[1:])]) if pad else full
        return full.chunk(size, dim=0)[rank]
    if kind == "glu":
        gate, up = full.chunk(2, dim=0)
        return torch.cat([gate.chunk(size, dim=0)[rank], up.chunk(size, dim=0)[rank]])
    return full.chunk(size, dim=gather_dim(kind))[rank]
