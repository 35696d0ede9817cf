"""Core attention for Megatron's local layers: torch's fused ``scaled_dot_product_attention``.

Megatron's local ``DotProductAttention`` materialises the ``[b, heads, s, s]`` scores and their softmax,
which at 32k-token micro-batches is gigabytes per head group and not what runs on a GPU cluster (Transformer
Engine's fused attention keeps memory linear in the sequence). This module fills the same ``ModuleSpec`` slot
(``self_attention.submodules.core_attention``) with torch's SDPA: flash attention on CUDA, torch's flash
kernel on CPU (``platform.causal_attention``), causal, grouped-query heads without repeating K/V. It takes
no mask: right-padded micro-batches need only the causal one.
"""

from __future__ import annotations

import torch
from megatron.core import parallel_state as ps
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_grpo import platform


class SDPAttention(MegatronModule):
    def __init__(self, config: TransformerConfig, layer_number: int, attn_mask_type: AttnMaskType,
                 attention_type: str, attention_dropout: float | None = None, softmax_scale: float | None = None,
                 cp_comm_type: str | None = None, pg_collection=None):
        super().__init__(config=config)
        if attn_mask_type != AttnMaskType.causal:
            raise ValueError(f"SDPAttention is causal only, got {attn_mask_type}")
        if config.context_parallel_size != 1:
            raise ValueError("SDPAttention does not split the sequence (context_parallel_size must be 1)")
        tp = pg_collection.tp.size() if pg_collection is not None else ps.get_tensor_model_parallel_world_size()
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout
        self.softmax_scale = softmax_scale
        self.hidden_per_partition = config.kv_channels * config.num_attention_heads // tp

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask=None,
                attn_mask_type=None, attention_bias=None, packed_seq_params=None) -> torch.Tensor:
        """``query [s, b, heads, d]``, ``key/value [s, b, groups, d]`` -> ``[s, b, heads * d]``."""
        if attention_bias is not None or packed_seq_params is not None:
            raise ValueError("SDPAttention takes no attention bias and no packed sequences")
        q, k, v = (x.permute(1, 2, 0, 3) for x in (query, key, value))  # [b, heads, s, d]
        out = platform.causal_attention(q, k, v, self.dropout if self.training else 0.0, self.softmax_scale)
        return out.permute(2, 0, 1, 3).reshape(query.shape[0], query.shape[1], self.hidden_per_partition)
