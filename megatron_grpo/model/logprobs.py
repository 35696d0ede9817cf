"""Per-token log-probabilities and entropy from vocab-parallel logits (what the GRPO loss consumes).

The logits of one TP rank cover a contiguous slice of the (padded) vocabulary. Rows past the real
vocabulary exist only because Megatron pads the embedding; they are masked to -inf so the trainer's
distribution is the one HF/vLLM sample from. The fp32 softmax is materialised once, inside Megatron's
``vocab_parallel_cross_entropy`` (which works in place on the scaled copy made here).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps
from megatron.core.tensor_parallel import reduce_from_tensor_model_parallel_region, vocab_parallel_cross_entropy


def _scaled_logits(logits: torch.Tensor, vocab_size: int, temperature: float, inplace: bool) -> torch.Tensor:
    """fp32 ``logits / temperature`` with padded vocabulary columns at -inf. ``inplace`` (the caller's last
    use of ``logits``) reuses an fp32 input instead of allocating one more logits-sized tensor."""
    scaled = logits.float()
    if scaled is logits and not inplace:
        scaled = scaled.clone()
    if temperature != 1.0:
        scaled.div_(temperature)
    part = scaled.shape[-1]
    start = ps.get_tensor_model_parallel_rank() * part
    if start + part > vocab_size:
        scaled[..., max(vocab_size - start, 0):] = float("-inf")
    return scaled


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, vocab_size: int, temperature: float = 1.0,
                   inplace: bool = False) -> torch.Tensor:
    """log p(targets) under softmax(logits / T); logits ``[..., V/tp]``, targets ``[...]`` -> ``[...]``."""
    scaled = _scaled_logits(logits, vocab_size, temperature, inplace)
    return -vocab_parallel_cross_entropy(scaled, targets)


def token_entropy(logits: torch.Tensor, vocab_size: int, temperature: float = 1.0, differentiable: bool = False,
                  chunk_rows: int = 1024) -> torch.Tensor:
    """Entropy of softmax(logits / T) per position over the whole (TP-split) vocabulary.

    As a metric it runs without autograd, ``chunk_rows`` positions at a time, so it never holds more than
    a few chunk-sized fp32 temporaries; ``differentiable`` (an entropy bonus) needs the full graph."""
    if differentiable:
        return _entropy(logits, vocab_size, temperature)
    flat = logits.detach().reshape(-1, logits.shape[-1])
    with torch.no_grad():
        parts = [_entropy(chunk, vocab_size, temperature) for chunk in flat.split(chunk_rows)]
    return torch.cat(parts).view(logits.shape[:-1])


def _entropy(logits: torch.Tensor, vocab_size: int, temperature: float) -> torch.Tensor:
    scaled = _scaled_logits(logits, vocab_size, temperature, inplace=False)
    local_max = scaled.detach().max(dim=-1).values
    dist.all_reduce(local_max, op=dist.ReduceOp.MAX, group=ps.get_tensor_model_parallel_group())
    shifted = scaled - local_max.unsqueeze(-1)
    exp = shifted.exp()
    sums = torch.stack([exp.sum(-1), (exp * shifted.masked_fill(exp == 0, 0.0)).sum(-1)])
    sums = reduce_from_tensor_model_parallel_region(sums)
    return sums[0].log() - sums[1] / sums[0]
