"""model.attention.SDPAttention against a naive causal GQA attention (scores materialised)."""

from __future__ import annotations

import math

import pytest
import torch


def _naive(q, k, v):
    """[s, b, h, d] / [s, b, g, d] -> [s, b, h*d]: softmax(q k^T / sqrt(d) + causal) v, KV repeated per group."""
    s, b, h, d = q.shape
    k, v = (x.repeat_interleave(h // x.shape[2], dim=2) for x in (k, v))
    scores = torch.einsum("qbhd,kbhd->bhqk", q, k) / math.sqrt(d)
    scores = scores.masked_fill(torch.triu(torch.ones(s, s, dtype=torch.bool), 1), float("-inf"))
    return torch.einsum("bhqk,kbhd->qbhd", scores.softmax(-1), v).reshape(s, b, h * d)


def _config(heads=4, groups=2, d=8):
    from megatron.core.transformer import TransformerConfig

    return TransformerConfig(num_layers=1, hidden_size=heads * d, num_attention_heads=heads, num_query_groups=groups,
                             kv_channels=d, attention_dropout=0.0, use_cpu_initialization=True)


class _TP1:
    class tp:  # noqa: N801 - stands in for a process group collection
        @staticmethod
        def size():
            return 1


@pytest.mark.parametrize("groups", [4, 2, 1])
def test_matches_naive_causal_attention(groups):
    from megatron.core.transformer.enums import AttnMaskType

    from megatron_grpo.model.attention import SDPAttention

    attn = SDPAttention(_config(groups=groups), 1, AttnMaskType.causal, "self", pg_collection=_TP1)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(7, 3, 4, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(7, 3, groups, 8, generator=g, dtype=torch.float64) for _ in range(2))
    torch.testing.assert_close(attn(q, k, v), _naive(q, k, v))


def test_refuses_what_it_does_not_implement():
    from megatron.core.transformer.enums import AttnMaskType

    from megatron_grpo.model.attention import SDPAttention

    with pytest.raises(ValueError, match="causal only"):
        SDPAttention(_config(), 1, AttnMaskType.padding, "self", pg_collection=_TP1)
