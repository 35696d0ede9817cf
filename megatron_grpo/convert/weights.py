"""Moving weights between a sharded Megatron model and HF-named full tensors.

``load_hf_weights`` fills this rank's shards from any name->tensor mapping (a lazy safetensors
reader, or a dict in tests); ``stage_hf_tensors`` streams this pipeline stage's weights back out as
full HF tensors (TP shards all-gathered). Both are driven by ``convert.mapping``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps

from megatron_grpo.convert.mapping import (
    MappingError,
    fuse,
    gather_dim,
    hf_layout,
    match_mcore,
    rules_for,
    shard,
    split,
    unpad,
)
from megatron_grpo.model.arch import ModelArch


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    while hasattr(module, "module"):
        module = module.module
    return module


def global_named_params(chunks: list[torch.nn.Module]) -> Iterator[tuple[str, torch.nn.Parameter]]:
    """Parameters of this rank's model chunks, with layer numbers made global (PP/VPP offsets)."""
    for chunk in chunks:
        model = unwrap(chunk)
        layers = model.decoder.layers if hasattr(model, "decoder") else []
        for name, param in model.named_parameters():
            if name.startswith("decoder.layers."):
                _, _, local, rest = name.split(".", 3)
                name = f"decoder.layers.{layers[int(local)].layer_number - 1}.{rest}"
            yield name, param


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
    tp_rank, tp = ps.get_tensor_model_parallel_rank(), ps.get_tensor_model_parallel_world_size()
    for name, param in global_named_params(chunks):
        match = match_mcore(name, rules)
        tensors = []
        for hf_name in match.hf_names:
            tensor = source[hf_name]
            if tuple(tensor.shape) != layout[hf_name]:
                raise MappingError(
                    f"{where}: tensor '{hf_name}' has shape {tuple(tensor.shape)}, expected {layout[hf_name]}"
                )
            tensors.append(tensor)
        local = shard(match.rule.kind, fuse(match.rule.kind, tensors, arch), tp_rank, tp, padded_vocab)
        if local.shape != param.shape:
            raise MappingError(f"{where}: '{name}' shard shape {tuple(local.shape)} != {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(local)


def _gather_tp(piece: torch.Tensor, dim: int | None) -> torch.Tensor:
    """The full tensor from every TP rank's slice along ``dim``: gathered straight into one buffer, so
    dim 0 (most tensors) allocates only the result; dim 1 (row-parallel) needs one transposing copy."""
    tp = ps.get_tensor_model_parallel_world_size()
    if tp == 1 or dim is None:
        return piece
    out = piece.new_empty((tp, *piece.shape))
    dist.all_gather(list(out.unbind(0)), piece.contiguous(), group=ps.get_tensor_model_parallel_group())
    return out.flatten(0, 1) if dim == 0 else out.movedim(0, dim).flatten(dim, dim + 1)


def stage_hf_tensors(chunks: list[torch.nn.Module], arch: ModelArch,
                     dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Full HF tensors of this pipeline stage, one at a time, in ``hf_layout`` order whatever the layer spec
    (collective over the TP group: all TP ranks iterate). Each HF tensor is gathered from the ranks'
    slices of it, cast first: in flight is at most the tensor itself (twice for a row-parallel one), never
    a whole fused parameter plus its shards."""
    rules, tp = rules_for(arch), ps.get_tensor_model_parallel_world_size()
    order = {name: i for i, name in enumerate(hf_layout(arch))}
    exported = []
    for name, param in global_named_params(chunks):
        match = match_mcore(name, rules)
        if match.rule.export:
            exported.append((order[match.hf_names[0]], match, param))
    for _, match, param in sorted(exported, key=lambda item: item[0]):
        kind = match.rule.kind
        for hf_name, piece in zip(match.hf_names, split(kind, param.data, arch, tp), strict=True):
            piece = piece if dtype is None else piece.to(dtype)
            yield hf_name, unpad(kind, _gather_tp(piece, gather_dim(kind)), arch.vocab_size)
