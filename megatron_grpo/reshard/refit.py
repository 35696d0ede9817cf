"""Refit: stream the trained Megatron shards into the rollout engines as HF-named full tensors.

Colocated layout: every rank holds an engine with the full model (rollout TP 1 on CPU), so every rank
must receive every tensor. Any TP/PP/DP layout works: pipeline stage by stage, the stage's TP ranks
all-gather each parameter (``convert.weights.stage_hf_tensors``), then each pipeline group broadcasts it
from that stage to the other stages. Data-parallel replicas hold identical weights after the optimizer
step and stream in parallel, each within its own pipeline groups. Each engine takes the tensors lazily
and applies them in byte-bounded buckets: the extra memory is one bucket plus the tensor in flight.

Before anything moves, every engine checks the full manifest (every HF name, shape and dtype, derived
from the weight mapping), so a mismatch leaves all engines' previous weights untouched.

Megatron-Core's ``resharding`` module (refit.swap_model_weights) was evaluated for the regrouping step:
it copies into a second Megatron model of the target layout, which doubles weight memory and still ends
in Megatron names, so vLLM would need a further HF-naming pass; this direct stream avoids both.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps

from megatron_grpo.convert.mapping import hf_layout, match_mcore, rules_for
from megatron_grpo.convert.weights import global_named_params
from megatron_grpo.model.policy import MegatronPolicy
from megatron_grpo.rollout.types import RolloutEngine


def manifest(policy: MegatronPolicy, dtype: torch.dtype) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {name: (shape, dtype) for name, shape in hf_layout(policy.arch).items()}


def _stage_manifest(policy: MegatronPolicy) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes this stage will stream, in order, computed without moving any data."""
    rules, layout = rules_for(policy.arch), hf_layout(policy.arch)
    names = []
    for name, _ in global_named_params(policy.model):
        match = match_mcore(name, rules)
        if match.rule.export:
            names += [(hf, layout[hf]) for hf in match.hf_names]
    return names


def full_weights(policy: MegatronPolicy, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """Collective: every rank yields every HF tensor of the model, stage by stage."""
    group = ps.get_pipeline_model_parallel_group()
    ranks = dist.get_process_group_ranks(group)
    pp_rank = ps.get_pipeline_model_parallel_rank()
    for stage in range(ps.get_pipeline_model_parallel_world_size()):
        box = [_stage_manifest(policy) if stage == pp_rank else None]
        if len(ranks) > 1:
            dist.broadcast_object_list(box, src=ranks[stage], group=group)
        local = policy.hf_tensors(dtype) if stage == pp_rank else None  # TP collective inside the stage
        for name, shape in box[0]:
            if local is not None:
                got, tensor = next(local)
                if got != name:
                    raise RuntimeError(f"refit: stage {stage} produced '{got}' where its manifest says '{name}'")
            else:
                tensor = torch.empty(shape, dtype=dtype)
            if len(ranks) > 1:
                dist.broadcast(tensor, src=ranks[stage], group=group)
            yield name, tensor


class RefitError(RuntimeError):
    """The engine rejected the update's manifest; its previous weights are untouched."""


def _check_manifest_everywhere(policy: MegatronPolicy, engine: RolloutEngine, dtype: torch.dtype) -> None:
    """Every engine checks the manifest; all ranks learn every verdict, so nobody streams into a rejected
    update (which would leave the other ranks blocked in a broadcast)."""
    try:
        engine.check_manifest(manifest(policy, dtype))
        mine = None
    except ValueError as exc:
        mine = f"rank {dist.get_rank()}: {exc}"
    verdicts = [None] * dist.get_world_size()
    dist.all_gather_object(verdicts, mine)
    errors = [v for v in verdicts if v is not None]
    if errors:
        raise RefitError(f"refit rejected, engines keep their weights: {errors[0]}")


def refit(policy: MegatronPolicy, engine: RolloutEngine, dtype: torch.dtype) -> dict[str, float]:
    """Push the policy's current weights into this rank's ``engine``. Collective over all ranks."""
    start = time.perf_counter()
    sent = {"bytes": 0, "tensors": 0}

    def counted(stream):
        for name, tensor in stream:
            sent["bytes"] += tensor.numel() * tensor.element_size()
            sent["tensors"] += 1
            yield name, tensor

    _check_manifest_everywhere(policy, engine, dtype)
    engine.update_weights(counted(full_weights(policy, dtype)))
    return {"refit/seconds": time.perf_counter() - start, "refit/bytes": float(sent["bytes"]),
            "refit/tensors": float(sent["tensors"])}
