"""Moving weights between a sharded Megatron model and HF-named full tensors.

``load_hf_weights`` fills this rank's shards from any name->tensor mapping (a lazy safetensors
reader, or a dict in tests); ``stage_hf_tensors`` streams this pipeline stage's weights back out as
full HF tensors (TP shards all-gathered; each routed expert broadcast from the EP rank that holds it).
Both are driven by ``convert.mapping``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps

from megatron_grpo import platform
from megatron_grpo.convert.mapping import (
    MappingError,
    Match,
    fuse,
    gather_dim,
    match_mcore,
    rules_for,
    shard,
    split,
    unpad,
)
from megatron_grpo.families import ModelArch, hf_layout


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    while hasattr(module, "module"):
        module = module.module
    return module


# A routed expert's local index: SequentialMLP's module number, or TEGroupedMLP's weight suffix.
_LOCAL_EXPERT = re.compile(r"(\.mlp\.experts\.local_experts\.)(\d+)(\.)|(\.mlp\.experts\.linear_fc[12]\.weight)(\d+)$")


def _global_expert(name: str, first: int) -> str:
    def renumber(m: re.Match) -> str:
        if m.group(1):
            return f"{m.group(1)}{first + int(m.group(2))}{m.group(3)}"
        return f"{m.group(4)}{first + int(m.group(5))}"

    return _LOCAL_EXPERT.sub(renumber, name)


def global_named_params(chunks: list[torch.nn.Module]) -> Iterator[tuple[str, torch.nn.Parameter]]:
    """Parameters of this rank's model chunks, with layer numbers made global (PP/VPP offsets) and
    expert numbers made global (this EP rank holds experts ``ep_rank * local ...``)."""
    for chunk in chunks:
        model = unwrap(chunk)
        layers = model.decoder.layers if hasattr(model, "decoder") else []
        experts = getattr(model.config, "num_moe_experts", None) or 0
        first_expert = ps.get_expert_model_parallel_rank() * (experts // ps.get_expert_model_parallel_world_size())
        for name, param in model.named_parameters():
            if name.startswith("decoder.layers."):
                _, _, local, rest = name.split(".", 3)
                name = f"decoder.layers.{layers[int(local)].layer_number - 1}.{rest}"
                if experts:
                    name = _global_expert(name, first_expert)
            yield name, param


def _tp(match: Match) -> tuple[int, int]:
    """(rank, size) of the group that shards this tensor: expert-TP for a routed expert's, TP otherwise."""
    if match.rule.expert:
        return ps.get_expert_tensor_parallel_rank(), ps.get_expert_tensor_parallel_world_size()
    return ps.get_tensor_model_parallel_rank(), ps.get_tensor_model_parallel_world_size()


def check_hf_names(names: set[str], arch: ModelArch, where: str) -> None:
    """Every expected tensor present, nothing unknown (a tied model may still carry lm_head.weight)."""
    expected = hf_layout(arch)
    missing = sorted(set(expected) - names)
    if missing:
        raise MappingError(f"{where}: missing tensor '{missing[0]}' ({len(missing)} missing in all)")
    allowed_extra = {"lm_head.weight"} if arch.tie_word_embeddings else set()
    unknown = sorted(names - set(expected) - allowed_extra)
    if unknown:
        raise MappingError(f"{where}: unexpected tensor '{unknown[0]}' for {arch.architecture}")


def load_hf_weights(chunks: list[torch.nn.Module], arch: ModelArch, source: Mapping[str, torch.Tensor],
                    padded_vocab: int, where: str = "HF weights") -> None:
    """Copy HF tensors into this rank's parameter shards, one parameter at a time."""
    check_hf_names(set(source.keys()), arch, where)
    rules, layout = rules_for(arch), hf_layout(arch)
    for name, param in global_named_params(chunks):
        match = match_mcore(name, rules)
        tensors = []
        for hf_name in match.hf_names:
            tensor = source[hf_name]
            if tuple(tensor.shape) != layout[hf_name]:
                raise MappingError(
                    f"{where}: tensor '{hf_name}' has shape {tuple(tensor.shape)}, expected {layout[hf_name]}"
                )
            if not tensor.is_floating_point():
                raise MappingError(f"{where}: tensor '{hf_name}' has dtype {tensor.dtype}, expected a floating-point "
                                   "dtype (fp32, bf16 or fp16)")
            tensors.append(tensor)
        local = shard(match.rule.kind, fuse(match.rule.kind, tensors, arch), *_tp(match), padded_vocab)
        if local.shape != param.shape:
            raise MappingError(f"{where}: '{name}' shard shape {tuple(local.shape)} != {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(local)


def _gather_tp(piece: torch.Tensor, dim: int | None, expert: bool) -> torch.Tensor:
    """The full tensor from every TP (expert-TP) rank's slice along ``dim``: gathered straight into one
    buffer, so dim 0 (most tensors) allocates only the result; dim 1 (row-parallel) needs one transposing
    copy."""
    group = ps.get_expert_tensor_parallel_group() if expert else ps.get_tensor_model_parallel_group()
    tp = dist.get_world_size(group) if group is not None else 1
    if tp == 1 or dim is None:
        return piece
    out = piece.new_empty((tp, *piece.shape))
    dist.all_gather(list(out.unbind(0)), piece.contiguous(), group=group)
    return out.flatten(0, 1) if dim == 0 else out.movedim(0, dim).flatten(dim, dim + 1)


def _stage_entries(chunks: list[torch.nn.Module], arch: ModelArch) -> list[tuple[Match, torch.nn.Parameter | None]]:
    """What this stage exports, in ``hf_layout`` order, identical on every rank of the EP group: every
    routed expert appears, with this rank's parameter where it holds the expert and None elsewhere."""
    rules = rules_for(arch)
    order = {name: i for i, name in enumerate(hf_layout(arch))}
    entries: dict[str, tuple[Match, torch.nn.Parameter | None]] = {}
    for name, param in global_named_params(chunks):
        match = match_mcore(name, rules)
        if not match.rule.export:
            continue
        entries[match.hf_names[0]] = (match, param)
        if match.rule.expert:  # the same tensor of the other experts, held by other EP ranks
            for e in range(arch.num_experts):
                other = Match(match.rule, match.layer, e)
                entries.setdefault(other.hf_names[0], (other, None))
    return [entries[name] for name in sorted(entries, key=order.__getitem__)]


def stage_hf_tensors(chunks: list[torch.nn.Module], arch: ModelArch,
                     dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Full HF tensors of this pipeline stage, one at a time, in ``hf_layout`` order whatever the layer spec
    (collective over the TP and EP groups: all their ranks iterate). Each HF tensor is gathered from the
    ranks' slices of it, cast first: in flight is at most the tensor itself (twice for a row-parallel one),
    never a whole fused parameter plus its shards. A routed expert's tensors are gathered over expert-TP on
    the EP rank that holds the expert, then broadcast over the EP group."""
    layout = hf_layout(arch)
    ep_group = ps.get_expert_model_parallel_group() if arch.is_moe else None
    ep_ranks = dist.get_process_group_ranks(ep_group) if ep_group is not None else [dist.get_rank()]
    per_rank = arch.num_experts // len(ep_ranks) if arch.is_moe else 0
    entries = _stage_entries(chunks, arch)
    received = dtype or next((p.dtype for _, p in entries if p is not None), torch.float32)
    for match, param in entries:
        kind = match.rule.kind
        if param is None:  # another EP rank's expert
            for hf_name in match.hf_names:
                piece = torch.empty(layout[hf_name], dtype=received, device=platform.device())
                dist.broadcast(piece, src=ep_ranks[match.expert // per_rank], group=ep_group)
                yield hf_name, piece
            continue
        for hf_name, piece in zip(match.hf_names, split(kind, param.data, arch, _tp(match)[1]), strict=True):
            piece = piece if dtype is None else piece.to(dtype)
            full = unpad(kind, _gather_tp(piece, gather_dim(kind), match.rule.expert), arch.vocab_size)
            if match.rule.expert and len(ep_ranks) > 1:
                dist.broadcast(full.contiguous(), src=dist.get_rank(), group=ep_group)
            yield hf_name, full
