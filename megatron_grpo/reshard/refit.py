"""Refit: stream the trained Megatron shards into the rollout engine as HF-named full tensors.

Any TP/PP/DP layout works. Only the data-parallel replica that holds global rank 0 takes part (the
other replicas hold identical weights after the optimizer step). Within it, pipeline stage by stage:
the stage's TP ranks all-gather each parameter (``convert.weights.stage_hf_tensors``), and the stage's
TP-rank-0 sends the full HF tensors point-to-point to global rank 0, where the engine lives. Rank 0
feeds them to the engine lazily, which applies them in byte-bounded buckets: the extra memory is one
bucket plus the tensor in flight, never the model.

Before anything moves, the full manifest (every HF name, shape, dtype, derived from the weight mapping)
is checked by the engine, so a mismatch leaves the engine's previous weights untouched.

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

from megatron_grpo.convert.mapping import hf_layout
from megatron_grpo.model.policy import MegatronPolicy
from megatron_grpo.rollout.types import RolloutEngine


def manifest(policy: MegatronPolicy, dtype: torch.dtype) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {name: (shape, dtype) for name, shape in hf_layout(policy.arch).items()}


def _send_stage(tensors: Iterator[tuple[str, torch.Tensor]], dst: int, group) -> None:
    """Stage s (> 0), TP rank 0: a header per tensor, then the tensor, to the pipeline group's rank 0."""
    for name, tensor in tensors:
        if ps.get_tensor_model_parallel_rank() == 0:
            dist.send_object_list([(name, tuple(tensor.shape), tensor.dtype)], dst=dst, group=group)
            dist.send(tensor.contiguous(), dst=dst, group=group)
    if ps.get_tensor_model_parallel_rank() == 0:
        dist.send_object_list([None], dst=dst, group=group)


def _recv_stage(src: int, group) -> Iterator[tuple[str, torch.Tensor]]:
    while True:
        header = [None]
        dist.recv_object_list(header, src=src, group=group)
        if header[0] is None:
            return
        name, shape, dtype = header[0]
        tensor = torch.empty(shape, dtype=dtype)
        dist.recv(tensor, src=src, group=group)
        yield name, tensor


def gather_to_rank0(policy: MegatronPolicy, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """Collective over the DP-rank-0 replica: yields every HF tensor on global rank 0, nothing elsewhere."""
    if ps.get_data_parallel_rank() != 0:
        return
    group = ps.get_pipeline_model_parallel_group()
    ranks = dist.get_process_group_ranks(group)
    pp_rank, tp_rank = ps.get_pipeline_model_parallel_rank(), ps.get_tensor_model_parallel_rank()
    is_root = dist.get_rank() == 0
    for stage in range(ps.get_pipeline_model_parallel_world_size()):
        if stage == pp_rank:
            stream = policy.hf_tensors(dtype)
            if stage == 0:
                for name, tensor in stream:  # TP collective: every TP rank of stage 0 iterates
                    if is_root:
                        yield name, tensor
            else:
                _send_stage(stream, dst=ranks[0], group=group)
        elif pp_rank == 0 and tp_rank == 0 and is_root:
            yield from _recv_stage(src=ranks[stage], group=group)


class RefitError(RuntimeError):
    """The engine rejected the update's manifest; its previous weights are untouched."""


def _check_manifest_everywhere(policy: MegatronPolicy, engine: RolloutEngine | None, dtype: torch.dtype) -> None:
    """Rank 0 checks the manifest and tells every rank, so nobody starts sending into a rejected update."""
    verdict: list[str | None] = [None]
    if dist.get_rank() == 0:
        if engine is None:
            verdict[0] = "global rank 0 holds no rollout engine"
        else:
            try:
                engine.check_manifest(manifest(policy, dtype))
            except ValueError as exc:
                verdict[0] = str(exc)
    dist.broadcast_object_list(verdict, src=0)
    if verdict[0] is not None:
        raise RefitError(f"refit rejected: {verdict[0]}")


def refit(policy: MegatronPolicy, engine: RolloutEngine | None, dtype: torch.dtype) -> dict[str, float]:
    """Push the policy's current weights into ``engine`` (given on global rank 0 only). Collective."""
    start = time.perf_counter()
    sent = {"bytes": 0, "tensors": 0}

    def counted(stream):
        for name, tensor in stream:
            sent["bytes"] += tensor.numel() * tensor.element_size()
            sent["tensors"] += 1
            yield name, tensor

    _check_manifest_everywhere(policy, engine, dtype)
    stream = gather_to_rank0(policy, dtype)
    if dist.get_rank() == 0:
        engine.update_weights(counted(stream))
    else:
        for _ in stream:  # drives this rank's part of the collectives
            pass
    return {"refit/seconds": time.perf_counter() - start, "refit/bytes": float(sent["bytes"]),
            "refit/tensors": float(sent["tensors"])}
