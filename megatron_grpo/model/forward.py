"""Forward/backward over packed micro-batches through Megatron's pipeline schedules.

Micro-batches are right-padded ``[b, L]`` token tensors. With right padding the plain causal mask is
exact for every real token (a real token never attends to a later pad), so no padding mask is needed;
pads are excluded by the loss mask. (Megatron's THD ``PackedSeqParams`` needs TE/flash attention,
which the CPU local spec does not have.)

A ``LossFn(logprobs [b, L], entropy [b, L], batch) -> (loss, metrics)`` must return a loss already normalised by the
GLOBAL counts of the mini-batch, so summing micro-batches and DP ranks yields the full gradient;
Megatron is configured (``calculate_per_token_loss``) not to rescale it.

Device discipline: micro-batches arrive as host tensors and move to ``platform.device()`` here, once;
what comes back to the caller (metrics, log-probs) crosses ``platform.to_host`` in one read per call.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps
from megatron.core.distributed import finalize_model_grads
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_grpo import platform
from megatron_grpo.algo.loss import reduce_metrics
from megatron_grpo.convert.weights import unwrap
from megatron_grpo.model.logprobs import token_entropy, token_logprobs
from megatron_grpo.model.routing import expert_load, set_replay

Batch = dict[str, torch.Tensor]
Entropy = Literal["off", "metric", "loss"]  # not computed / detached metric / differentiable (entropy bonus)
LossFn = Callable[[torch.Tensor, torch.Tensor, Batch], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def _pad_to_multiple(tokens: torch.Tensor, multiple: int) -> torch.Tensor:
    pad = -tokens.shape[1] % multiple
    return torch.nn.functional.pad(tokens, (0, pad)) if pad else tokens


def _forward_step(vocab_size: int, temperature: float, loss_fn: LossFn | None, entropy: Entropy,
                  data_iterator, model):
    batch = next(data_iterator)
    # Sequence parallelism splits the sequence over TP ranks: pad to a multiple of TP, trim the outputs.
    tp = ps.get_tensor_model_parallel_world_size()
    padded = _pad_to_multiple(batch["tokens"], tp)
    # MoE: replay the engine's routing when the micro-batch carries it, else clear the previous one.
    set_replay(model, batch.get("routed_experts"), padded.shape[1], ps.get_tensor_model_parallel_rank(),
               tp if unwrap(model).config.sequence_parallel else 1)
    positions = torch.arange(padded.shape[1], device=padded.device).expand_as(padded)
    output = model(padded, positions, None)  # causal attention needs no mask (right padding)
    return output, partial(_loss_step, batch, padded, vocab_size, temperature, loss_fn, entropy)


def _loss_step(batch: Batch, padded: torch.Tensor, vocab_size: int, temperature: float, loss_fn: LossFn | None,
               entropy_mode: Entropy, logits: torch.Tensor):
    # Per-token values over the padded logits (a slice of them is not contiguous, and copying it would
    # cost one more logits-sized tensor), then trimmed. Position t predicts token t+1; the last position
    # predicts nothing, and the response frame never reads it.
    length = batch["tokens"].shape[1]
    targets = torch.roll(padded, shifts=-1, dims=1)
    entropy = None
    if entropy_mode != "off":
        entropy = token_entropy(logits, vocab_size, temperature, differentiable=entropy_mode == "loss")[:, :length]
    # Last use of the logits: scale them in place (one logits-sized fp32 tensor fewer at the peak).
    logprobs = token_logprobs(logits, targets, vocab_size, temperature, inplace=entropy_mode != "loss")[:, :length]
    if loss_fn is None:  # forward only: hand the per-token values back
        outputs = {"logprobs": logprobs}
        if entropy is not None:
            outputs["entropy"] = entropy
        return logprobs.sum() * 0.0, _one(logprobs), outputs
    loss, metrics = loss_fn(logprobs, entropy, batch)
    return loss, _one(logprobs), {**metrics, "loss": loss.detach()}


def _one(like: torch.Tensor) -> torch.Tensor:
    """The micro-batch's token count for Megatron's per-token loss: 1, since our losses are normalised."""
    return torch.ones((), dtype=torch.int, device=like.device)


def run_micro_batches(model: list, micro_batches: list[Batch], vocab_size: int, temperature: float,
                      loss_fn: LossFn | None, entropy: Entropy = "off") -> list[dict[str, torch.Tensor]]:
    """Forward (and backward when ``loss_fn`` is given) over all micro-batches; per-micro-batch outputs
    on the last pipeline stage, an empty list elsewhere."""
    step = partial(_forward_step, vocab_size, temperature, loss_fn, entropy)
    chunks = len(model)
    on_device = [platform.to_device(mb) for mb in micro_batches]
    iterators = [iter(on_device) for _ in range(chunks)]
    return get_forward_backward_func()(
        forward_step_func=step,
        data_iterator=iterators if chunks > 1 else iterators[0],
        model=model,
        num_microbatches=len(micro_batches),
        seq_length=max(mb["tokens"].shape[1] for mb in micro_batches),
        micro_batch_size=max(mb["tokens"].shape[0] for mb in micro_batches),
        forward_only=loss_fn is None,
    )


def forward_logprobs(model: list, micro_batches: list[Batch], vocab_size: int, temperature: float = 1.0,
                     with_entropy: bool = False) -> list[Batch]:
    """Per-token log-probs (and entropy) of every micro-batch, on every rank of the pipeline (device
    tensors)."""
    with torch.no_grad():
        outputs = run_micro_batches(model, micro_batches, vocab_size, temperature, None,
                                    "metric" if with_entropy else "off")
    keys = ("logprobs", "entropy") if with_entropy else ("logprobs",)
    result = []
    for i, mb in enumerate(micro_batches):
        shape = mb["tokens"].shape
        item = {}
        for key in keys:
            tensor = outputs[i][key] if outputs else torch.empty(shape, dtype=torch.float32, device=platform.device())
            item[key] = broadcast_from_last_stage(tensor.contiguous())
        result.append(item)
    return result


def broadcast_from_last_stage(tensor: torch.Tensor) -> torch.Tensor:
    if ps.get_pipeline_model_parallel_world_size() > 1:
        dist.broadcast(tensor, src=ps.get_pipeline_model_parallel_last_rank(),
                       group=ps.get_pipeline_model_parallel_group())
    return tensor


def train_micro_batches(model: list, optimizer, micro_batches: list[Batch], vocab_size: int,
                        temperature: float, loss_fn: LossFn, entropy: Entropy = "metric",
                        aux_loss_coef: float = 0.0) -> tuple[dict[str, float], bool, float]:
    """One optimizer step over ``micro_batches``: zero grads, forward/backward, sync grads, step.

    Returns (summed metrics, whether the update was applied, grad norm). Metrics are summed over
    micro-batches and DP ranks, which is the global value for globally normalised quantities; an MoE
    model adds its load-balancing loss (``moe/load_balancing_loss``, mean over layers and micro-batches)
    and its experts' load (``moe/expert_load_*``).
    """
    for chunk in model:
        chunk.zero_grad_buffer()
    optimizer.zero_grad()
    aux = _scale_aux_loss(model, micro_batches, aux_loss_coef)
    with expert_load(model) as load:
        outputs = run_micro_batches(model, micro_batches, vocab_size, temperature, loss_fn, entropy)
    finalize_model_grads(model)  # DP grad all-reduce/reduce-scatter, tied-embedding and SP norm grads
    grads_finite = _grads_finite(model)
    if grads_finite:
        applied, grad_norm, _ = optimizer.step()
    else:
        applied, grad_norm = False, float("nan")
    metrics = _reduce_metrics(outputs)
    if aux:
        metrics.update(_router_metrics(model, len(micro_batches)))
    if unwrap(model[0]).config.num_moe_experts:
        metrics.update(_load_metrics(load, unwrap(model[0]).config))
    return metrics, bool(applied), float(grad_norm if grad_norm is not None else 0.0)


def _load_metrics(load: dict[int, torch.Tensor], config) -> dict[str, float]:
    """Tokens per expert over the step, every token the routers saw (padding included), relative to the mean
    expert's: the most loaded expert of any layer (``moe/expert_load_max``; 1.0 is perfect balance, E/k all
    tokens on k experts) and the least loaded (``moe/expert_load_min``; 0 is an expert no token reached).
    Nothing is dropped (no capacity factor), so every routed token is computed. One world all-reduce: under
    sequence parallelism TP ranks route disjoint tokens, pipeline stages disjoint layers, DP ranks their own
    sequences."""
    counts = torch.zeros(config.num_layers, config.num_moe_experts, dtype=torch.float32, device=platform.device())
    for layer, tokens in load.items():
        counts[layer] = tokens
    dist.all_reduce(counts)
    ratio = counts / counts.mean(dim=1, keepdim=True).clamp(min=1.0)
    high, low = platform.to_host(torch.stack([ratio.max(), ratio.min()])).tolist()
    return {"moe/expert_load_max": high, "moe/expert_load_min": low}


def _scale_aux_loss(model: list, micro_batches: list[Batch], coef: float) -> bool:
    """Make the MoE load-balancing loss weigh ``coef`` x its token-weighted mean over the step's micro-batches
    (all DP ranks). Megatron's router multiplies each micro-batch's aux loss by its token count, expecting
    the trainer to divide every gradient by the step's token count later (``calculate_per_token_loss``);
    this trainer normalises its losses up front instead, so the division goes into the coefficient, which
    the routers read at every forward. Returns whether there is an aux loss (then metrics follow)."""
    config = unwrap(model[0]).config  # shared by every chunk and router
    if not config.num_moe_experts or coef <= 0:  # no aux loss: nothing to scale, nothing tracked
        return False
    from megatron.core.transformer.moe.moe_utils import clear_aux_losses_tracker

    clear_aux_losses_tracker()  # this step's values only
    # Megatron multiplies by the tokens THIS rank's router saw: under sequence parallelism a TP rank's slice
    # of the (TP-padded) sequence, its router gradients then summed over TP. So the divisor counts slices.
    tp = ps.get_tensor_model_parallel_world_size()
    local = sum(mb["tokens"].shape[0] * -(-mb["tokens"].shape[1] // tp) for mb in micro_batches)
    tokens = torch.tensor([float(local)], dtype=torch.float64, device=platform.device())
    dist.all_reduce(tokens, group=ps.get_data_parallel_group())
    config.moe_aux_loss_coeff = coef / max(platform.to_host(tokens).item(), 1.0)
    return True


def _router_metrics(model: list, local_micro_batches: int) -> dict[str, float]:
    """Mean over layers and over the step's micro-batches (all DP ranks) of the switch load-balancing loss
    Megatron's routers tracked (1.0: every expert got its share); empty without an aux loss."""
    from megatron.core.transformer.moe.moe_utils import clear_aux_losses_tracker, get_moe_layer_wise_logging_tracker

    tracked = get_moe_layer_wise_logging_tracker().get("load_balancing_loss")
    if not tracked:
        return {}
    values = tracked["values"].to(torch.float64)  # per layer, summed over this rank's micro-batches
    box = torch.stack([values.sum(), torch.tensor(float(local_micro_batches), dtype=torch.float64,
                                                  device=values.device)])
    # each stage tracks its layers; under sequence parallelism each TP rank its tokens' share of the loss
    dist.all_reduce(box[:1], group=ps.get_pipeline_model_parallel_group())
    dist.all_reduce(box[:1], group=ps.get_tensor_model_parallel_group())
    dist.all_reduce(box, group=ps.get_data_parallel_group())
    clear_aux_losses_tracker()
    total, count = platform.to_host(box).tolist()
    return {"moe/load_balancing_loss": total / (count * unwrap(model[0]).config.num_layers)}


def _grads_finite(model: list) -> bool:
    """True when every gradient on every rank is finite (checked before the optimizer touches them): one
    sum per gradient buffer (a NaN or Inf anywhere makes it non-finite; a reduction, so no buffer-sized
    temporary: ``isfinite(buffer)`` would be one byte per parameter), one all-reduce, one host read."""
    bad = torch.zeros(1, device=platform.device())
    for chunk in model:
        for buffer in chunk.buffers + chunk.expert_parallel_buffers:
            bad += ~torch.isfinite(buffer.grad_data.sum())
    dist.all_reduce(bad)
    return platform.to_host(bad).item() == 0


def _reduce_metrics(outputs: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Sum over micro-batches and DP ranks (``*_max`` keys: max), as ``algo.reduce_metrics`` defines. Only
    the last pipeline stage has outputs: it tells the other stages the names and values."""
    local = reduce_metrics(outputs)
    names = sorted(local)
    values = torch.stack([local[k] for k in names]) if names else torch.zeros(0, dtype=torch.float64,
                                                                               device=platform.device())
    if ps.get_pipeline_model_parallel_world_size() > 1:
        last, group = ps.get_pipeline_model_parallel_last_rank(), ps.get_pipeline_model_parallel_group()
        box = [names]
        dist.broadcast_object_list(box, src=last, group=group)
        if box[0] != names:
            names = box[0]
            values = torch.empty(len(names), dtype=torch.float64, device=platform.device())
        dist.broadcast(values, src=last, group=group)
    is_max = torch.tensor([k.endswith("_max") for k in names], dtype=torch.bool, device=values.device)
    sums, maxes = values.where(~is_max, 0.0), values.where(is_max, float("-inf"))
    dist.all_reduce(sums, group=ps.get_data_parallel_group())
    dist.all_reduce(maxes, op=dist.ReduceOp.MAX, group=ps.get_data_parallel_group())
    return dict(zip(names, platform.to_host(sums.where(~is_max, maxes)).tolist(), strict=True))
