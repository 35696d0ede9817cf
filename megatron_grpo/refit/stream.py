"""Refit: stream the trained Megatron shards into the rollout engines as HF-named full tensors.

Every rank yields every HF tensor; what a rank does with it is its engine handle's business: colocated,
each rank's own TP-1 engine takes it; disaggregated, rank 0's ``RemoteEngines`` broadcasts it to every
engine worker over the weight-transfer group (``refit.transfer``) and the other ranks drop it.

Any TP/PP/DP layout works: pipeline stage by stage, the stage's TP ranks all-gather each HF tensor from
their slices of it (``convert.weights.stage_hf_tensors``), then each pipeline group broadcasts it from that
stage to the other stages (every rank knows every stage's names and shapes from Megatron's layer placement,
so nothing but the tensors crosses the wire). Data-parallel replicas hold identical weights after the
optimizer step and stream in parallel, each within its own pipeline groups. Each engine takes the tensors
lazily and copies them into its weights in place, bucket by bucket: the extra memory is one bucket plus the
tensor in flight (at most twice the largest HF tensor). Measured in docs/refit.md.

Before anything moves, every engine checks the full manifest (every HF name, shape and dtype, derived
from the weight mapping), so a mismatch leaves all engines' previous weights untouched.

Megatron-Core's ``resharding`` module (refit.swap_model_weights) was evaluated for the regrouping step:
it copies into a second Megatron model of the target layout, which doubles weight memory and still ends
in Megatron names, so vLLM would need a further HF-naming pass; this direct stream avoids both.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps
from megatron.core.transformer.transformer_block import get_num_layers_to_build
from megatron.core.transformer.transformer_layer import get_transformer_layer_offset

from megatron_grpo import platform
from megatron_grpo.convert.mapping import stage_hf_layout
from megatron_grpo.convert.weights import unwrap
from megatron_grpo.families import hf_layout
from megatron_grpo.model.policy import MegatronPolicy
from megatron_grpo.rollout.types import RolloutEngine
from megatron_grpo.rollout.weight_specs import checksum, checksums_agree

log = logging.getLogger(__name__)


class RefitError(RuntimeError):
    """The engine rejected the update's manifest; its previous weights are untouched."""


def manifest(policy: MegatronPolicy, dtype: torch.dtype) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """HF name -> (shape, dtype) of everything a refit sends, known without touching the weights."""
    return {name: (shape, dtype) for name, shape in hf_layout(policy.arch).items()}


def stage_manifests(policy: MegatronPolicy) -> list[dict[str, tuple[int, ...]]]:
    """What every pipeline stage streams (names and shapes, in order), derived by each rank from the layer
    placement Megatron uses: receivers size their buffers without asking the owner."""
    config = unwrap(policy.model[0]).config
    pp, vpp = ps.get_pipeline_model_parallel_world_size(), config.virtual_pipeline_model_parallel_size
    manifests = []
    for stage in range(pp):
        layers: list[int] = []
        for vp_stage in range(vpp) if vpp else [None]:
            offset = get_transformer_layer_offset(config, vp_stage=vp_stage, pp_rank=stage)
            layers += range(offset, offset + get_num_layers_to_build(config, vp_stage=vp_stage, pp_rank=stage))
        manifests.append(stage_hf_layout(policy.arch, set(layers), first=stage == 0, last=stage == pp - 1))
    return manifests


def full_weights(policy: MegatronPolicy, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """Collective: every rank yields every HF tensor of the model, stage by stage."""
    group = ps.get_pipeline_model_parallel_group()
    ranks = dist.get_process_group_ranks(group)
    pp_rank = ps.get_pipeline_model_parallel_rank()
    for stage, names in enumerate(stage_manifests(policy)):
        local = policy.hf_tensors(dtype) if stage == pp_rank else None  # TP collective inside the stage
        for name, shape in names.items():
            if local is not None:
                got, tensor = next(local, ("<end of stream>", None))
                if tensor is None or (got, tuple(tensor.shape)) != (name, shape):
                    raise RuntimeError(f"refit: stage {stage} produced '{got}' where its manifest says "
                                       f"'{name}' {shape}")
            else:
                tensor = torch.empty(shape, dtype=dtype, device=platform.device())
            if len(ranks) > 1:
                dist.broadcast(tensor, src=ranks[stage], group=group)
            yield name, tensor
        if local is not None and (extra := next(local, None)) is not None:
            raise RuntimeError(f"refit: stage {stage} produced '{extra[0]}', which its manifest does not list")


def _engine_verdict(policy: MegatronPolicy, engine: RolloutEngine | None, dtype: torch.dtype) -> str | None:
    """Why this rank's engine cannot take the update, or None. Any exception becomes a verdict: a rank
    that raised here alone would leave the others blocked in the collectives that follow."""
    if engine is None:
        return None
    full = manifest(policy, dtype)
    try:
        engine.check_manifest(full)
    except Exception as exc:  # reported to every rank, raised there as RefitError
        return f"rank {dist.get_rank()}: {exc}"
    # An engine with tied embeddings accepts lm_head.weight as an alias of the embedding and drops it,
    # which would silently discard an untied policy's output layer: it must insist on those names.
    own = set(full) - set(hf_layout(dataclasses.replace(policy.arch, tie_word_embeddings=True)))
    if own:
        try:
            engine.check_manifest({name: spec for name, spec in full.items() if name not in own})
        except Exception:  # the engine needs them: it is untied too
            return None
        return (f"rank {dist.get_rank()}: {sorted(own)[0]}: the policy has untied embeddings but the engine "
                f"ties this tensor to the input embedding (tie_word_embeddings differs)")
    return None


def _check_manifest_everywhere(policy: MegatronPolicy, engine: RolloutEngine | None, dtype: torch.dtype) -> None:
    """Every engine checks the manifest; all ranks learn every verdict, so nobody streams into a rejected
    update (which would leave the other ranks blocked in a broadcast)."""
    verdicts = [None] * dist.get_world_size()
    dist.all_gather_object(verdicts, _engine_verdict(policy, engine, dtype))
    errors = [v for v in verdicts if v is not None]
    if errors:
        raise RefitError(f"refit rejected, engines keep their weights: {errors[0]}")


def refit(policy: MegatronPolicy, engine: RolloutEngine | None, dtype: torch.dtype, check: bool = True,
          version: int = 0) -> dict[str, float]:
    """Push the policy's current weights, policy ``version``, into this rank's ``engine`` (None: this
    rank only helps gather them). Collective over all ranks.

    With ``check``, every engine's ``weight_checksums`` afterwards must equal the checksums of what was
    sent (``refit/checksum_ok`` is 1 only if all ranks agree); a mismatch is logged naming the tensor."""
    start = time.perf_counter()
    sent = {"bytes": 0, "tensors": 0}
    sums: dict[str, torch.Tensor] = {}

    def counted(stream):
        for name, tensor in stream:
            sent["bytes"] += tensor.numel() * tensor.element_size()
            sent["tensors"] += 1
            if check and engine is not None:
                sums[name] = checksum(tensor)
            yield name, tensor

    _check_manifest_everywhere(policy, engine, dtype)
    stream = counted(full_weights(policy, dtype))
    if engine is not None:
        engine.update_weights(stream, version=version)
    else:
        for _ in stream:
            pass
    metrics = {"refit/seconds": time.perf_counter() - start, "refit/bytes": float(sent["bytes"]),
               "refit/tensors": float(sent["tensors"])}
    if check:
        values = platform.to_host(torch.stack(list(sums.values()))).tolist() if sums else []
        ok = _checksums_ok(engine, dict(zip(sums, values, strict=True)))
        if ok is not None:
            metrics["refit/checksum_ok"] = ok
    return metrics


def _checksums_ok(engine: RolloutEngine | None, sent: dict[str, float]) -> float | None:
    """Collective: 1.0 if every rank's engine holds what its stream sent, else 0.0 (mismatches logged);
    None if an engine cannot read its weights back (engine TP > 1). Ranks without an engine abstain."""
    verdicts = [None] * dist.get_world_size()
    vote = "abstain" if engine is None else _holds_what_was_sent(engine, sent)
    dist.all_gather_object(verdicts, vote)  # objects: any backend, no device
    votes = [v for v in verdicts if v != "abstain"]
    return None if None in votes else float(all(votes))


def _holds_what_was_sent(engine: RolloutEngine, sent: dict[str, float]) -> bool | None:
    held = engine.weight_checksums()
    if held is None:
        return None
    bad = [name for name, value in sent.items() if name in held and not checksums_agree(value, held[name])]
    if bad:
        log.error("refit checksum: rank %d's engine does not hold what was sent for %s (%d tensors in all): "
                  "sent %.9g, engine %.9g", dist.get_rank(), bad[0], len(bad), sent[bad[0]], held[bad[0]])
    return not bad
