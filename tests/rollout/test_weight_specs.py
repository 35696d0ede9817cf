"""Update bookkeeping without an engine: expected HF parameters, per-bucket checks, error messages."""

from __future__ import annotations

import pytest
import torch
from rollout_helpers import TINY
from transformers import AutoConfig

from megatron_grpo.rollout.weight_specs import (
    ModelWeights,
    WeightMismatchError,
    WeightStream,
    check_manifest,
    checksum,
    checksums_agree,
    engine_locations,
    hf_weight_specs,
)


def tiny_weights(tie: bool = True, dtype: torch.dtype = torch.float32) -> ModelWeights:
    config = AutoConfig.from_pretrained(TINY)
    config.tie_word_embeddings = tie
    specs, aliases = hf_weight_specs(config, dtype)
    return ModelWeights(specs=specs, aliases=aliases)


def tensors(weights: ModelWeights) -> list[tuple[str, torch.Tensor]]:
    return [(name, torch.zeros(shape, dtype=dtype)) for name, (shape, dtype) in weights.specs.items()]


def specs(bucket: list[tuple[str, torch.Tensor]]) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(name, tuple(t.shape), t.dtype) for name, t in bucket]


def test_specs_follow_the_hf_config():
    tied, untied = tiny_weights(tie=True), tiny_weights(tie=False)
    assert len(tied.specs) == 2 + 2 * 11 and tied.aliases == {"lm_head.weight": "model.embed_tokens.weight"}
    assert untied.specs.keys() - tied.specs.keys() == {"lm_head.weight"} and not untied.aliases
    assert tied.specs["model.layers.1.self_attn.k_proj.weight"] == ((64, 128), torch.float32)
    assert tiny_weights(dtype=torch.bfloat16).specs["model.norm.weight"] == ((128,), torch.bfloat16)


def test_stream_passes_buckets_through_and_finds_repeats_and_gaps():
    weights = tiny_weights()
    by_name = dict(tensors(weights))
    stream = WeightStream(weights)
    q, k, v = (f"model.layers.0.self_attn.{p}_proj.weight" for p in "qkv")
    assert stream.add(specs([(q, by_name[q]), (k, by_name[k])])) == [q, k]  # fused parts may split
    assert stream.add(specs([(v, by_name[v])])) == [v]
    with pytest.raises(WeightMismatchError, match=f"{q}: sent twice"):
        stream.add(specs([(q, by_name[q])]))
    with pytest.raises(WeightMismatchError, match="model.embed_tokens.weight: missing .* and 18 more"):
        stream.finish()


def test_stream_accepts_and_drops_a_tied_copy():
    weights = tiny_weights()
    stream = WeightStream(weights)
    everything = [*tensors(weights), ("lm_head.weight", torch.zeros(16, 128))]
    assert stream.add(specs(everything)) == list(weights.specs)
    stream.finish()


def test_a_bad_bucket_is_rejected_whole():
    weights = tiny_weights()
    bucket = tensors(weights)
    bucket[3] = (bucket[3][0], torch.zeros(1))
    stream = WeightStream(weights)
    with pytest.raises(WeightMismatchError, match=rf"{bucket[3][0]}: shape \(1,\)"):
        stream.add(specs(bucket))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model.layers.2.mlp.up_proj.weight": ((384, 128), torch.float32)}, "layers.2.mlp.up_proj.weight: not a"),
        ({"model.norm.weight": ((128,), torch.float16)}, "model.norm.weight: dtype torch.float16"),
        ({"lm_head.weight": ((17, 128), torch.float32)}, r"lm_head.weight: shape \(17, 128\)"),
        ({"model.norm.weight": None}, "model.norm.weight: missing"),
    ],
)
def test_manifest_errors_name_the_tensor(change, message):
    weights = tiny_weights()
    manifest = {**weights.specs, **change}
    manifest = {n: spec for n, spec in manifest.items() if spec is not None}
    with pytest.raises(WeightMismatchError, match=message):
        check_manifest(weights, manifest)
    check_manifest(weights, weights.specs)


def test_engine_locations_stack_fused_parts_in_packing_order():
    weights = tiny_weights(tie=False)
    packed = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}
    where = engine_locations(weights.specs, packed)
    attn, mlp = "model.layers.1.self_attn", "model.layers.1.mlp"
    assert where[f"{attn}.q_proj.weight"] == (f"{attn}.qkv_proj.weight", None, 0)
    assert where[f"{attn}.k_proj.weight"] == (f"{attn}.qkv_proj.weight", None, 128)  # after q: 4 heads of 32
    assert where[f"{attn}.v_proj.weight"] == (f"{attn}.qkv_proj.weight", None, 128 + 64)
    assert where[f"{mlp}.up_proj.weight"] == (f"{mlp}.gate_up_proj.weight", None, 384)
    assert where[f"{attn}.q_norm.weight"] == (f"{attn}.q_norm.weight", None, 0)
    assert where["lm_head.weight"] == ("lm_head.weight", None, 0)
    assert set(where) == set(weights.specs)


def test_checksum_reads_first_and_last_rows():
    t = torch.arange(12.0).view(6, 2)
    assert float(checksum(t)) == (0 + 1) + (10 + 11)
    assert float(checksum(t[:1])) == 0 + 1
    assert float(checksum(torch.tensor([1.0, 2.0, 4.0]))) == 7.0
    changed = t.clone()
    changed[5, 1] += 1e-3
    assert not checksums_agree(float(checksum(t)), float(checksum(changed)))
    assert checksums_agree(float(checksum(t)), float(checksum(t.t().contiguous().t())))  # other strides


def test_moe_specs_are_checkpoint_names_and_locate_in_fused_experts():
    """Qwen3-MoE: transformers fuses the experts in memory but checkpoints (and updates) name each one;
    vLLM holds them at their expert's index of w13 = [gate; up] and w2."""
    from tests.model.tiny import tiny_moe_config

    config = AutoConfig.for_model("qwen3_moe", **{k: v for k, v in tiny_moe_config().items() if k != "model_type"})
    specs, aliases = hf_weight_specs(config, torch.float32)
    expert = "model.layers.1.mlp.experts.3."
    assert specs[expert + "up_proj.weight"] == ((32, 64), torch.float32) and not aliases
    assert specs["model.layers.1.mlp.gate.weight"] == ((4, 64), torch.float32)
    where = engine_locations(specs, {"qkv_proj": ["q_proj", "k_proj", "v_proj"]})
    fused = "model.layers.1.mlp.experts.routed_experts."
    assert where[expert + "gate_proj.weight"] == (fused + "w13_weight", 3, 0)
    assert where[expert + "up_proj.weight"] == (fused + "w13_weight", 3, 32)
    assert where[expert + "down_proj.weight"] == (fused + "w2_weight", 3, 0)
