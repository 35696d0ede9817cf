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


def _scaled_logits(logits: torch.Tensor, vocab_size: int, temperature: float) -> torch.Tensor:
    """fp32 copy of ``logits / temperature`` with padded vocabulary columns at -inf."""
    scaled = logits.float() / temperature
    part = scaled.shape[-1]
    start = ps.get_tensor_model_parallel_rank() * part
    if start + part > vocab_size:
        pad_from = max(vocab_size - start, 0)
        scaled[..., pad_from:] = float("-inf")
    return scaled


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, vocab_size: int,
                   temperature: float = 1.0) -> torch.Tensor:
    """log p(targets) under softmax(logits / T); logits ``[..., V/tp]``, targets ``[...]`` -> ``[...]``."""
    scaled = _scaled_logits(logits, vocab_size, temperature)
    return -vocab_parallel_cross_entropy(scaled, targets)


def token_entropy(logits: torch.Tensor, vocab_size: int, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / T) per position over the whole (TP-split) vocabulary; differentiable,
    so an entropy bonus can use it. Costs a second fp32 pass over the logits."""
    scaled = _scaled_logits(logits, vocab_size, temperature)
    local_max = scaled.detach().max(dim=-1).values
    dist.all_reduce(local_max, op=dist.ReduceOp.MAX, group=ps.get_tensor_model_parallel_group())
    shifted = scaled - local_max.unsqueeze(-1)
    exp = shifted.exp()
    sums = torch.stack([exp.sum(-1), (exp * shifted.masked_fill(exp == 0, 0.0)).sum(-1)])
    sums = reduce_from_tensor_model_parallel_region(sums)
    return sums[0].log() - sums[1] / sums[0]
