"""Rollout routing replay: the experts the rollout engine routed each token to, forced on Megatron's routers.

In an MoE policy a token whose top-k set differs between the engine and the trainer goes through different
experts: the main source of train/inference log-prob mismatch in MoE RL. With replay, every router takes the
engine's choice of experts (Megatron-Core's ``RouterReplay``, built into each router by
``moe_enable_routing_replay``); the router's own scores still weigh the chosen experts, so it keeps its
gradient.

A micro-batch carries ``routed_experts`` ``[b, S, layers, k]``: per token, the global expert indices of every
layer, -1 on rows the engine never routed (the last token, which it only sampled, and padding). A router sees
its tokens sequence-major (``[S, b]`` flattened) and, under sequence parallelism, only its TP rank's slice of
the sequence; ``router_targets`` makes that view.
"""

from __future__ import annotations

import contextlib

import torch
from megatron.core.transformer.moe.router import TopKRouter
from megatron.core.transformer.moe.router_replay import RouterReplayAction


def router_targets(routed: torch.Tensor, layer: int, padded_len: int, tp_rank: int = 0,
                   sequence_parallel_size: int = 1) -> torch.Tensor:
    """``[S_local * b, k]`` long indices for layer ``layer`` (0-based, global) of ``routed`` ``[b, S, layers,
    k]``, the sequence padded to ``padded_len``. Rows without a routing (-1, or the padding) get experts
    0..k-1: their outputs are never read (a causal model's last and padded positions feed no kept log-prob)."""
    idx = routed[:, :, layer, :].long()  # [b, S, k]
    b, s, k = idx.shape
    if padded_len > s:
        idx = torch.nn.functional.pad(idx, (0, 0, 0, padded_len - s), value=-1)
    idx = torch.where(idx < 0, torch.arange(k, device=idx.device), idx)
    idx = idx.transpose(0, 1)  # [S, b, k]: Megatron's activations are sequence-major
    if sequence_parallel_size > 1:
        local = padded_len // sequence_parallel_size
        idx = idx[tp_rank * local:(tp_rank + 1) * local]
    return idx.reshape(-1, k)


def routers(chunk: torch.nn.Module) -> list[TopKRouter]:
    """The MoE routers of one model chunk (this pipeline stage's layers only)."""
    return [m for m in chunk.modules() if isinstance(m, TopKRouter)]


def set_replay(chunk: torch.nn.Module, routed: torch.Tensor | None, padded_len: int, tp_rank: int,
               sequence_parallel_size: int) -> None:
    """Before a chunk's forward: replay ``routed`` (see the module docstring), or route freely with None.
    Each micro-batch sets its own targets: without activation recomputation the backward pass never routes
    again, so a pipeline schedule running later forwards first loses nothing."""
    for router in routers(chunk):
        replay = router.router_replay
        if replay is None:
            raise RuntimeError("routing replay needs the model built with moe_enable_routing_replay")
        replay.clear_indices()  # set_target_indices also queues them for a recomputing backward: keep one
        if routed is None:
            replay.clear_router_replay_action()
            continue
        replay.set_target_indices(router_targets(routed, router.layer_number - 1, padded_len, tp_rank,
                                                 sequence_parallel_size))
        replay.set_router_replay_action(RouterReplayAction.REPLAY_FORWARD)


@contextlib.contextmanager
def routing_maps(chunks: list[torch.nn.Module]):
    """Within the block, each router's forward appends its ``[tokens, experts]`` bool routing map (tokens as
    the router sees them) to the yielded list, in forward order: what the trainer's routers chose."""
    maps: list[torch.Tensor] = []
    hooks = [r.register_forward_hook(lambda module, args, out: maps.append(out[1]))
             for chunk in chunks for r in routers(chunk)]
    try:
        yield maps
    finally:
        for hook in hooks:
            hook.remove()


@contextlib.contextmanager
def expert_load(chunks: list[torch.nn.Module]):
    """Within the block, the tokens each router sends to each expert are summed into the yielded dict
    (global layer index, 0-based -> ``[experts]`` float counts on the device): the load-balance metrics'
    input, a few floats per layer however many tokens pass."""
    counts: dict[int, torch.Tensor] = {}

    def count(router, args, out):
        tokens = out[1].sum(dim=0, dtype=torch.float32)
        layer = router.layer_number - 1
        counts[layer] = counts[layer] + tokens if layer in counts else tokens

    hooks = [r.register_forward_hook(count) for chunk in chunks for r in routers(chunk)]
    try:
        yield counts
    finally:
        for hook in hooks:
            hook.remove()
