"""HF -> Megatron (TP2) -> logits at TP2 / PP2 / TP1 -> HF: the full conversion round trip.

A random tiny Qwen3 saved with ``save_pretrained`` is converted with ``hf-to-mcore --tp 2``, loaded by
Megatron at three layouts (checkpoints reshard on load), compared with transformers' Qwen3ForCausalLM,
and exported back with ``mcore-to-hf``; the exported tensors must be bit-identical to the originals and
the exported directory must load in transformers and generate the same greedy tokens as Megatron.
"""

from __future__ import annotations

import pytest
import torch

from megatron_grpo.convert.export import export_hf
from megatron_grpo.convert.hf_io import HFCheckpoint
from megatron_grpo.convert.importer import import_hf
from tests.convert.hfdir import save_hf_dir
from tests.dist import run_distributed
from tests.model.tiny import tiny_moe_config, tiny_qwen2_config

LAYOUTS = {"tp2": {"tensor": 2}, "pp2": {"pipeline": 2}, "tp1": {}}  # tp1 here means DP2
NEW_TOKENS = 6


def _tokens(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 10), generator=torch.Generator().manual_seed(3))


def _greedy(model, prompt: torch.Tensor, vocab: int) -> torch.Tensor:
    """Greedy decoding with the Megatron GPTModel itself (full recompute per token; tiny model)."""
    tokens = prompt
    for _ in range(NEW_TOKENS):
        n = tokens.shape[1]
        mask = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)[None, None]
        logits = model(tokens, torch.arange(n)[None].expand_as(tokens), mask)[..., :vocab]
        tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens[:, prompt.shape[1]:]


def _load_at_layouts(config: dict, root: str, tokens: torch.Tensor, layouts: dict = LAYOUTS):
    from megatron.core import parallel_state as ps

    from megatron_grpo.checkpoint import load_checkpoint
    from megatron_grpo.convert.weights import unwrap
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.launch import init_distributed, shutdown
    from megatron_grpo.model.policy import MegatronPolicy
    from tests.model.tiny import model_cfg, parallel_cfg, smooth_adam

    arch = arch_from_dict(config)
    out = {}
    for name, layout in layouts.items():
        par = parallel_cfg(**layout)
        init_distributed(par, seed=123)  # a different random init: the checkpoint must overwrite it
        policy = MegatronPolicy(arch, model_cfg(), par, smooth_adam(), total_steps=1)
        assert load_checkpoint(root, policy, load_optimizer=False) == {}
        out[name] = torch.cat([o["logprobs"] for o in policy.logprobs([{"tokens": t[None]} for t in tokens])])
        if name == "tp1":
            model = unwrap(policy.model[0]).eval()
            with torch.no_grad():
                n = tokens.shape[1]
                mask = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)[None, None]
                out["logits"] = model(tokens, torch.arange(n)[None].expand_as(tokens), mask)[..., : arch.vocab_size]
                out["greedy"] = _greedy(model, tokens[:, :4], arch.vocab_size)
        ps.destroy_model_parallel()
    shutdown()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_hf_megatron_hf_round_trip(tmp_path, tie):
    from transformers import AutoModelForCausalLM

    hf_dir, root, out = tmp_path / "hf", tmp_path / "mcore", tmp_path / "export"
    model = save_hf_dir(hf_dir, tie, max_shard_size=None if tie else "100KB")  # untied: sharded input
    assert (hf_dir / "model.safetensors.index.json").exists() != tie
    import_hf(hf_dir, root, tp=2)
    tokens = _tokens(model.config.vocab_size)
    got = run_distributed(_load_at_layouts, 2, model.config.to_dict(), str(root), tokens)[0]

    with torch.no_grad():
        logits = model(tokens).logits
    expected = torch.log_softmax(logits, -1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    assert (got["logits"] - logits).abs().max() <= 1e-5
    for name in LAYOUTS:
        assert (got[name][:, :-1] - expected).abs().max() <= 1e-5, name

    summary = export_hf(root, hf_dir, out, progress=False)
    original, exported = HFCheckpoint(hf_dir), HFCheckpoint(out)
    assert set(exported) == set(original) - ({"lm_head.weight"} if tie else set())
    for name in exported:
        a, b = original[name], exported[name]
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert summary.parameters == sum(p.numel() for p in model.parameters())

    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    generated = reloaded.generate(tokens[:, :4], do_sample=False, max_new_tokens=NEW_TOKENS,
                                  min_new_tokens=NEW_TOKENS, pad_token_id=0)
    assert torch.equal(generated[:, 4:], got["greedy"])


FAMILY_CASES = {
    "qwen2": (tiny_qwen2_config, {"tp2": {"tensor": 2}}),
    # imported at EP1, resharded into EP2 on load (2 of the 4 experts per rank) and into ETP2
    "qwen3_moe": (tiny_moe_config, {"ep2": {"expert": 2}, "tp2": {"tensor": 2, "sequence_parallel": True}}),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILY_CASES))
def test_family_round_trip_is_bit_exact(tmp_path, family):
    """Every family: HF -> hf-to-mcore -> Megatron at other layouts (log-probs equal transformers') ->
    mcore-to-hf gives back exactly the tensors ``save_pretrained`` wrote."""
    make_config, layouts = FAMILY_CASES[family]
    config = make_config()
    hf_dir, root, out = tmp_path / "hf", tmp_path / "mcore", tmp_path / "export"
    model = save_hf_dir(hf_dir, config["tie_word_embeddings"], config=config)
    import_hf(hf_dir, root, tp=1)
    tokens = _tokens(config["vocab_size"])
    got = run_distributed(_load_at_layouts, 2, model.config.to_dict(), str(root), tokens, layouts)[0]
    with torch.no_grad():
        expected = torch.log_softmax(model(tokens).logits, -1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    for name in layouts:
        assert (got[name][:, :-1] - expected).abs().max() <= 1e-5, name
    export_hf(root, hf_dir, out, progress=False)
    original, exported = HFCheckpoint(hf_dir), HFCheckpoint(out)
    assert set(exported) == set(original)
    for name in exported:
        assert torch.equal(original[name], exported[name]), name
