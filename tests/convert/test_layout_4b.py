"""Real-size layout without real weights: Qwen3-4B, both models built on the meta device (no 16 GB).

Every HF parameter of transformers' Qwen3ForCausalLM maps to exactly one exported Megatron parameter
of Megatron's GPTModel and back, the fused shapes agree, and the parameter counts are equal once the
vocab padding is taken off.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.dist import run_distributed

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "models" / "qwen3-4b-base.config.json")


def _megatron_shapes(config: dict) -> tuple[dict[str, tuple[int, ...]], int]:
    from megatron_grpo.convert.weights import global_named_params
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.launch import init_distributed, shutdown
    from megatron_grpo.model.builder import build_model, padded_vocab_size
    from tests.model.tiny import model_cfg, parallel_cfg

    par = parallel_cfg()
    init_distributed(par, seed=0)
    arch = arch_from_dict(config)
    with torch.device("meta"):
        chunks = build_model(arch, model_cfg(), par)
    shapes = {name: tuple(p.shape) for name, p in global_named_params(chunks)}
    shutdown()
    return shapes, padded_vocab_size(arch.vocab_size, model_cfg().make_vocab_size_divisible_by, 1)


@pytest.mark.slow
def test_qwen3_4b_every_name_maps_once_with_shapes():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from megatron_grpo.convert.mapping import fuse, hf_layout, match_mcore, rules_for, shard, split, unpad
    from megatron_grpo.families import arch_from_dict

    config = json.loads(open(CONFIG).read())
    arch = arch_from_dict(config)
    with torch.device("meta"):
        hf = Qwen3ForCausalLM(Qwen3Config(**config))
    hf_shapes = {n: tuple(p.shape) for n, p in hf.named_parameters()}  # tied lm_head appears once
    assert hf_shapes == hf_layout(arch)

    mcore_shapes, padded = run_distributed(_megatron_shapes, 1, config)[0]
    rules, hits = rules_for(arch), Counter()
    for name, shape in mcore_shapes.items():
        match = match_mcore(name, rules)
        parts = [torch.empty(hf_shapes[n], device="meta") for n in match.hf_names]
        full = fuse(match.rule.kind, parts, arch)  # HF -> Megatron (import / refit direction)
        assert tuple(shard(match.rule.kind, full, 0, 1, padded).shape) == shape, name
        if match.rule.export:  # Megatron -> HF (export direction)
            back = [unpad(match.rule.kind, t, arch.vocab_size) for t in split(match.rule.kind, full, arch)]
            assert [tuple(t.shape) for t in back] == [hf_shapes[n] for n in match.hf_names], name
            hits.update(match.hf_names)
    assert hits == Counter(dict.fromkeys(hf_shapes, 1))  # every HF name exactly once

    padding = (padded - arch.vocab_size) * arch.hidden_size
    mcore_count = sum(torch.Size(s).numel() for s in mcore_shapes.values())
    hf_count = sum(torch.Size(s).numel() for s in hf_shapes.values())
    assert mcore_count - padding * (1 if arch.tie_word_embeddings else 2) == hf_count
    assert 3.9e9 < hf_count < 4.1e9
