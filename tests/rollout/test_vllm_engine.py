"""The vLLM engine against transformers: a tied tiny Qwen3 loaded from an HF checkpoint (one engine)."""

from __future__ import annotations

import pytest
import torch
from rollout_helpers import (
    EOS,
    SEQUENCES,
    engine_config,
    hf_greedy,
    hf_logprobs,
    hf_weights,
    mean_abs_diff,
    random_model,
    save_model,
)

from megatron_grpo.config.rollout import SamplingConfig
from megatron_grpo.rollout.vllm_engine import build_engine
from megatron_grpo.rollout.weight_specs import WeightMismatchError, checksum, checksums_agree

pytestmark = pytest.mark.slow

PROMPTS = [seq[:n] for seq, n in SEQUENCES]
LONG_PROMPT = [2, *[6, 13, 8, 14, 15, 11] * 6, 6, 13, 8, 14, 15]  # 42 tokens: one full 32-token KV block
GREEDY = SamplingConfig(n=1, temperature=0.0, max_response_length=8)


@pytest.fixture(scope="module")
def models():
    return random_model(seed=1), random_model(seed=2, init_std=0.3)


@pytest.fixture(scope="module")
def engine(models, tmp_path_factory):
    model_dir = save_model(models[0], tmp_path_factory.mktemp("tied"))
    return build_engine(model_dir, model_dir, engine_config(), dtype="fp32", load_weights=True)


def engine_logprobs(engine) -> list[list[float]]:
    return engine.score([s for s, _ in SEQUENCES], [n for _, n in SEQUENCES])


def reference(model) -> list[list[float]]:
    return [hf_logprobs(model, s, n) for s, n in SEQUENCES]


def test_checkpoint_logprobs_match_transformers(engine, models):
    assert mean_abs_diff(engine_logprobs(engine), reference(models[0])) < 1e-4


def test_update_switches_to_new_weights(engine, models):
    old, new = models
    prompts = [*PROMPTS, LONG_PROMPT]  # the long prompt's first block is now in the prefix cache
    greedy_old = [s[0].token_ids for s in engine.generate(prompts, GREEDY, seed=0)]
    assert greedy_old == [hf_greedy(old, p, 8) for p in prompts]

    engine.update_weights(hf_weights(new))
    assert mean_abs_diff(engine_logprobs(engine), reference(new)) < 1e-4
    assert mean_abs_diff(engine_logprobs(engine), reference(old)) > 1e-2
    greedy_new = [s[0].token_ids for s in engine.generate(prompts, GREEDY, seed=0)]
    assert greedy_new == [hf_greedy(new, p, 8) for p in prompts]  # no stale cached prefix
    assert greedy_new != greedy_old

    engine.update_weights(hf_weights(old))  # streamed by name only (no lm_head alias) works too
    assert mean_abs_diff(engine_logprobs(engine), reference(old)) < 1e-4


def _bump_k_proj_last_row(worker) -> None:
    """Run inside the engine's worker: change one value where layer 1's k_proj sits in the fused qkv_proj."""
    params = dict(worker.model_runner.get_model().named_parameters())
    params["model.layers.1.self_attn.qkv_proj.weight"].data[128 + 63, 5] += 1.0  # k's last row: after q's 128


def test_weight_checksums_read_what_the_engine_holds(engine, models):
    old, new = models
    sent = dict(hf_weights(new))
    engine.update_weights(list(sent.items()))
    held = engine.weight_checksums()
    assert held.keys() == sent.keys() - {"lm_head.weight"}  # tied: the alias is not a tensor of its own
    assert all(checksums_agree(float(checksum(sent[name])), value) for name, value in held.items())
    old_sums = {name: float(checksum(t)) for name, t in hf_weights(old)}
    matrices = [name for name in held if sent[name].dim() == 2]  # norms are ones in both models
    assert len(matrices) == 1 + 2 * 7 and not any(checksums_agree(old_sums[name], held[name]) for name in matrices)

    engine._llm.collective_rpc(_bump_k_proj_last_row)
    moved = [name for name, value in engine.weight_checksums().items() if not checksums_agree(held[name], value)]
    assert moved == ["model.layers.1.self_attn.k_proj.weight"]  # the location map finds the fused part
    engine.update_weights(hf_weights(old))
    assert mean_abs_diff(engine_logprobs(engine), reference(old)) < 1e-4


def _wrong_shape(w):
    return [(n, t[:-1] if n == "model.layers.0.self_attn.k_proj.weight" else t) for n, t in w]


def _unknown(w):
    return [*w, ("model.layers.9.mlp.up_proj.weight", w[-1][1])]


def _missing(w):
    return [(n, t) for n, t in w if not n.endswith("layers.1.post_attention_layernorm.weight")]


def _wrong_dtype(w):
    return [(n, t.bfloat16() if n.endswith("v_proj.weight") else t) for n, t in w]


@pytest.mark.parametrize(
    ("corrupt", "named"),
    [
        (_wrong_shape, "model.layers.0.self_attn.k_proj.weight: shape (63, 128)"),
        (_unknown, "model.layers.9.mlp.up_proj.weight: not a parameter"),
        (_missing, "model.layers.1.post_attention_layernorm.weight: missing"),
        (_wrong_dtype, "model.layers.0.self_attn.v_proj.weight: dtype torch.bfloat16"),
    ],
)
def test_rejected_update_keeps_old_weights(engine, models, corrupt, named):
    with pytest.raises(WeightMismatchError, match=named.replace("(", r"\(").replace(")", r"\)")):
        engine.update_weights(corrupt(hf_weights(models[1])))
    assert mean_abs_diff(engine_logprobs(engine), reference(models[0])) < 1e-4


def test_bad_tensor_late_in_a_stream_blocks_generation_until_a_full_update(engine, models):
    weights = _wrong_shape(hf_weights(models[1]))[::-1]  # k_proj of layer 0 comes after a full bucket
    with pytest.raises(WeightMismatchError, match="partly updated"):
        engine.update_weights(iter(weights))
    with pytest.raises(RuntimeError, match="complete update"):
        engine_logprobs(engine)
    engine.update_weights(iter(hf_weights(models[0])))
    assert mean_abs_diff(engine_logprobs(engine), reference(models[0])) < 1e-4


def test_samples_are_seeded_and_finish_by_length_or_eos(engine):
    sampling = SamplingConfig(n=16, temperature=1.0, max_response_length=12)
    first = engine.generate(PROMPTS, sampling, seed=7)
    assert [len(group) for group in first] == [16] * len(PROMPTS)
    assert first == engine.generate(PROMPTS, sampling, seed=7)
    assert first != engine.generate(PROMPTS, sampling, seed=8)
    samples = [s for group in first for s in group]
    assert len({tuple(s.token_ids) for s in samples}) > len(samples) // 2  # samples of a prompt differ
    assert {s.finish_reason for s in samples} == {"stop", "length"}
    for s in samples:
        assert len(s.logprobs) == len(s.token_ids)
        if s.finish_reason == "stop":
            assert s.token_ids[-1] == EOS and EOS not in s.token_ids[:-1]
        else:
            assert len(s.token_ids) == 12 and EOS not in s.token_ids


def test_stop_string_ends_a_sample_and_stays_in_the_text(engine):
    samples = engine.generate(PROMPTS, SamplingConfig(n=8, max_response_length=12, stop=["+"]), seed=3)
    stopped = [s for group in samples for s in group if s.finish_reason == "stop" and s.token_ids[-1] != EOS]
    assert stopped, "no sample hit the stop string"
    for s in stopped:
        assert s.text.endswith("+") and s.token_ids[-1] == 13 and 13 not in s.token_ids[:-1]


def test_sampler_logprobs_equal_score_at_temperature_one(engine):
    groups = engine.generate(PROMPTS, SamplingConfig(n=4, temperature=1.0, max_response_length=8), seed=5)
    seqs, lens, sampled = [], [], []
    for prompt, group in zip(PROMPTS, groups, strict=True):
        for s in group:
            seqs.append(prompt + s.token_ids)
            lens.append(len(prompt))
            sampled.append(s.logprobs)
    assert mean_abs_diff(engine.score(seqs, lens), sampled) < 1e-4


def test_sampler_logprobs_are_after_temperature(engine, models):
    groups = engine.generate(PROMPTS, SamplingConfig(n=4, temperature=0.6, max_response_length=8), seed=5)
    got, want = [], []
    for prompt, group in zip(PROMPTS, groups, strict=True):
        for s in group:
            got.append(s.logprobs)
            want.append(hf_logprobs(models[0], prompt + s.token_ids, len(prompt), temperature=0.6))
    assert mean_abs_diff(got, want) < 1e-4


def test_text_skips_special_tokens(engine):
    for group in engine.generate(PROMPTS, SamplingConfig(n=8, max_response_length=8), seed=11):
        for s in group:
            assert not any(tok in s.text for tok in ("<eos>", "<pad>", "<bos>"))


def test_sleep_and_wake_are_no_ops_on_cpu(engine, models):
    engine.sleep()
    engine.wake_up()
    assert mean_abs_diff(engine_logprobs(engine), reference(models[0])) < 1e-4


def test_expected_weights_are_the_hf_parameters(engine, models):
    expected = engine.expected_weights()
    assert expected == {n: (tuple(p.shape), torch.float32) for n, p in models[0].named_parameters()}
    assert "lm_head.weight" not in expected  # tied: the embedding is sent once; the copy is optional
