"""HF <-> Megatron-Core weight mapping engine: runs a family's declarative table (``families``) with pure
tensor functions.

The same table serves the HF import, the Megatron->HF export and the online refit into vLLM.
Three layers of the problem are kept apart:

* naming: ``Rule`` patterns with ``{i}`` for the GLOBAL layer index and ``{e}`` for the GLOBAL expert index
  (PP offsets and EP expert offsets are resolved by the caller);
* fusing: Megatron fuses q/k/v per query group (``qkv``, weights and biases) and gate/up (``glu``);
  ``fuse``/``split`` convert between the HF tensors and one FULL (unsharded, unpadded) Megatron tensor;
* sharding: ``shard`` slices a full tensor for one TP rank (expert-TP rank for an expert's tensor),
  including vocab padding and the per-rank [gate_r; up_r] layout of a gated linear unit; ``split`` of a
  shard gives that rank's slice of each HF tensor, so the way back gathers HF tensors directly
  (``gather_dim``, ``unpad``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch

from megatron_grpo.config import ConfigError
from megatron_grpo.families import Kind, ModelArch, Rule, family, hf_layout


@dataclass(frozen=True)
class Match:
    rule: Rule
    layer: int | None       # global layer index, None for non-layer tensors
    expert: int | None = None  # global expert index, None unless ``rule.expert``

    @property
    def hf_names(self) -> tuple[str, ...]:
        return tuple(n.format(i=self.layer, e=self.expert) for n in self.rule.hf)


class MappingError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def rules_for(arch: ModelArch) -> tuple[Rule, ...]:
    try:
        return family(arch).rules(arch)
    except ConfigError:
        raise MappingError(f"no weight mapping for architecture {arch.architecture!r}") from None


@functools.cache  # matched for every parameter of every refit
def _pattern(template: str) -> re.Pattern:
    escaped = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{e\}", r"(?P<e>\d+)")
    return re.compile("^" + escaped + "$")


def match_mcore(name: str, rules: tuple[Rule, ...]) -> Match:
    """Rule for a Megatron parameter name whose layer (and expert) index is already global."""
    for rule in rules:
        m = _pattern(rule.mcore).match(name)
        if m:
            groups = m.groupdict()
            layer, expert = groups.get("i"), groups.get("e")
            return Match(rule, None if layer is None else int(layer), None if expert is None else int(expert))
    raise MappingError(f"Megatron parameter '{name}' has no HF mapping")


def stage_hf_layout(arch: ModelArch, layers: set[int] | range, first: bool, last: bool) -> dict[str, tuple[int, ...]]:
    """The HF tensors a pipeline stage exports (holding ``layers``, the embedding when ``first``, the final
    norm and output layer when ``last``), in ``hf_layout`` order: the order ``stage_hf_tensors`` streams."""
    names = set()
    experts = range(arch.num_experts)
    for rule in rules_for(arch):
        if not rule.export:
            continue
        if "{i}" in rule.mcore:
            names.update(n.format(i=i, e=e) for i in layers for n in rule.hf
                         for e in (experts if rule.expert else [None]))
        elif rule.mcore.startswith("embedding.") and first or not rule.mcore.startswith("embedding.") and last:
            names.update(rule.hf)
    return {name: shape for name, shape in hf_layout(arch).items() if name in names}


# ---- fusing: HF tensors <-> one full Megatron tensor ------------------------------------------------


def fuse(kind: Kind, tensors: list[torch.Tensor], arch: ModelArch) -> torch.Tensor:
    if kind == "qkv":
        q, k, v = tensors
        g, d = arch.num_query_groups, arch.head_dim
        qpg, rest = arch.num_attention_heads // g, q.shape[1:]  # rest: (hidden,) for a weight, () for a bias
        grouped = [q.view(g, qpg * d, *rest), k.view(g, d, *rest), v.view(g, d, *rest)]
        return torch.cat(grouped, dim=1).reshape(-1, *rest)
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
        grouped = t.view(g, (qpg + 2) * d, *t.shape[1:])
        q, k, v = grouped.split([qpg * d, d, d], dim=1)
        return [x.reshape(-1, *t.shape[1:]) for x in (q, k, v)]
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
