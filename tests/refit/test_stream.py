"""Refit from Megatron-Core (TP1, TP2, PP2; tied and untied) into colocated vLLM engines.

Every engine starts from dummy weights (``load_weights=False``); after a refit its per-token log-probs
and greedy tokens must be the Megatron model's. Process start-up and engine builds dominate on 2 cores,
so ONE world-2 gloo run does all the work -- layouts one after another in the same processes, each
policy from its own seed so that every refit has to change the engine -- and the tests below assert
on what it returns, one acceptance point each.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from tests.dist import run_distributed
from tests.model.tiny import model_cfg, parallel_cfg, tiny_hf_config
from tests.refit.rss import peak_rss_growth
from tests.rollout.rollout_helpers import SEQUENCES, TINY, engine_config, mean_abs_diff

pytestmark = pytest.mark.slow

MIB = 2**20
VOCAB = 16  # the tiny tokenizer's; small enough to score every candidate token for the greedy check
LAYOUTS = {"tp1": {}, "tp2": {"tensor": 2}, "pp2": {"pipeline": 2}}  # tp1 runs as 2 data-parallel replicas
CASES = [("tied", "tp1"), ("tied", "tp2"), ("tied", "pp2"), ("untied", "tp2"), ("untied", "pp2")]


# 2 MiB buckets: the model is 18 of them, the largest HF tensor (0.5 MiB) a quarter of one, and the
# allocator's noise in RSS (~0.5 MiB under load) small against the bound.
ENGINE = dataclasses.replace(engine_config(), refit_bucket_mb=2)


def model_config(tie: bool, intermediate: int = 512) -> dict:
    """~37 MB in fp32, largest HF tensor 0.5 MiB."""
    base = tiny_hf_config(tie=tie, layers=16, vocab=VOCAB, head_dim=64)
    return {**base, "hidden_size": 256, "intermediate_size": intermediate}


ENGINES = {"tied": model_config(True), "untied": model_config(False), "ffn384": model_config(True, 384)}


# ---- run on every rank ----------------------------------------------------------------------------


def _policy_scores(policy) -> list[list[float]]:
    """Megatron's log-probs of each sequence's continuation (position t scores token t + 1)."""
    outs = policy.logprobs([{"tokens": torch.tensor([seq])} for seq, _ in SEQUENCES])
    return [out["logprobs"][0, n - 1: len(seq) - 1].tolist() for out, (seq, n) in zip(outs, SEQUENCES, strict=True)]


def _engine_scores(engine) -> list[list[float]]:
    return engine.score([seq for seq, _ in SEQUENCES], [n for _, n in SEQUENCES])


def _megatron_argmax(policy, prompts: list[list[int]], generated: list[list[int]]) -> list[int]:
    """Megatron's greedy choice at every step of the engine's generations, teacher-forced on the engine's
    prefix: the vocabulary is tiny, so all candidates are scored. Equal lists = equal greedy decoding."""
    rows = [p + g[:t] + [v] for p, g in zip(prompts, generated, strict=True) for t in range(len(g))
            for v in range(VOCAB)]
    width = max(map(len, rows))
    tokens = torch.tensor([r + [0] * (width - len(r)) for r in rows])  # right padding: causal, harmless
    logprobs = policy.logprobs([{"tokens": tokens}])[0]["logprobs"]
    picked = torch.stack([logprobs[i, len(r) - 2] for i, r in enumerate(rows)])
    return picked.view(-1, VOCAB).argmax(-1).tolist()


def _greedy(policy, engine) -> dict:
    from megatron_grpo.config.rollout import SamplingConfig

    prompts = [seq[:n] for seq, n in SEQUENCES]
    samples = engine.generate(prompts, SamplingConfig(n=1, temperature=0.0, max_response_length=8), seed=0)
    tokens = [s[0].token_ids for s in samples]
    return {"engine": tokens, "megatron": _megatron_argmax(policy, prompts, tokens)}


def _refit_case(policy, engine) -> dict:
    """Engine vs Megatron before and after one refit, with the refit's peak RSS growth."""
    from megatron_grpo.refit.stream import refit

    before = mean_abs_diff(_engine_scores(engine), _policy_scores(policy))
    metrics, rss = peak_rss_growth(lambda: refit(policy, engine, torch.float32))
    after = mean_abs_diff(_engine_scores(engine), _policy_scores(policy))
    return {"before": before, "after": after, "rss": rss, "metrics": metrics}


def _step_case(policy, engine) -> dict:
    """One optimizer step: the engine keeps the old model until the refit, then has the new one."""
    from megatron_grpo.refit.stream import _checksums_ok, full_weights, refit
    from megatron_grpo.rollout.weight_specs import checksum

    old_scores, old = _policy_scores(policy), _greedy(policy, engine)
    target = torch.tensor([SEQUENCES[2][0]])  # one supervised step towards a fixed sequence
    policy.train_step([{"tokens": target}], lambda logprobs, entropy, batch: (-logprobs[:, :-1].mean(), {}))
    stale = _engine_scores(engine)
    new_sums = {name: float(checksum(t)) for name, t in full_weights(policy, torch.float32)}
    result = {"old": old, "stale_vs_old": mean_abs_diff(stale, old_scores),
              "stale_vs_new": mean_abs_diff(stale, _policy_scores(policy)), "stale": _greedy(policy, engine),
              "stale_checksum_ok": _checksums_ok(engine, new_sums)}
    metrics = refit(policy, engine, torch.float32)
    return {**result, "fresh_vs_new": mean_abs_diff(_engine_scores(engine), _policy_scores(policy)),
            "new": _greedy(policy, engine), "checksum_ok": metrics["refit/checksum_ok"]}


def _mismatch_case(policy, engine) -> dict:
    """A refit the engine must reject: the error, and the engine's scores before and after it."""
    from megatron_grpo.refit.stream import RefitError, refit

    before = _engine_scores(engine)
    try:
        refit(policy, engine, torch.float32)
        error = None
    except RefitError as exc:
        error = str(exc)
    return {"error": error, "before": before, "after": _engine_scores(engine)}


def _listed_rss(policy, engine) -> int:
    """Control for the RSS meter: the same stream materialised whole before the engine sees it."""
    from megatron_grpo.refit.stream import full_weights

    return peak_rss_growth(lambda: engine.update_weights(list(full_weights(policy, torch.float32))))[1]


def _worker(dirs: dict[str, str]) -> dict:
    from megatron.core import parallel_state as ps

    from megatron_grpo.config import OptimizerConfig
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.launch import init_distributed, shutdown
    from megatron_grpo.model.policy import MegatronPolicy
    from megatron_grpo.rollout.vllm_engine import build_engine

    env = init_distributed(parallel_cfg(), seed=1)  # torch.distributed first: vLLM builds its groups over it
    engines = {k: build_engine(d, TINY, ENGINE, "fp32", load_weights=False) for k, d in dirs.items()}
    optim = OptimizerConfig(lr=1e-2, weight_decay=0.0, grad_clip=0.0)
    out = {}
    for seed, (tie, layout) in enumerate(CASES):
        ps.destroy_model_parallel()
        par = parallel_cfg(**LAYOUTS[layout])
        init_distributed(par, seed=1, env=env)  # building an engine rewrites LOCAL_WORLD_SIZE in os.environ
        policy = MegatronPolicy(arch_from_dict(ENGINES[tie]), model_cfg(), par, optim, total_steps=2, seed=seed)
        if (tie, layout) == ("tied", "tp1"):  # while the mismatched engines still hold their dummy weights
            out["ffn"] = _mismatch_case(policy, engines["ffn384"])
            out["tied->untied"] = _mismatch_case(policy, engines["untied"])
        if (tie, layout) == ("untied", "tp2"):
            out["untied->tied"] = _mismatch_case(policy, engines["tied"])
        out[f"{tie}/{layout}"] = _refit_case(policy, engines[tie])
        if (tie, layout) == ("tied", "tp2"):
            out["listed_rss"] = _listed_rss(policy, engines["tied"])
            out["step"] = _step_case(policy, engines["tied"])
    for engine in engines.values():
        engine.close()
    shutdown()
    return out


# ---- tests ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    dirs = {}
    for name, config in ENGINES.items():  # dummy-weight engines need only config.json (tokenizer: TINY)
        path = tmp_path_factory.mktemp(name)
        (path / "config.json").write_text(json.dumps(config))
        dirs[name] = str(path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MALLOC_MMAP_THRESHOLD_", str(64 << 10))  # large frees go back to the OS: RSS = live bytes
        return run_distributed(_worker, 2, dirs, timeout=600, fresh=True)  # malloc reads it at start


def _model_bytes(config: dict) -> int:
    from megatron_grpo.families import arch_from_dict, hf_layout

    return sum(4 * torch.Size(shape).numel() for shape in hf_layout(arch_from_dict(config)).values())


@pytest.mark.parametrize("case", [f"{tie}/{layout}" for tie, layout in CASES])
def test_refit_engine_logprobs_equal_megatron(ranks, case):
    for rank in ranks:
        result = rank[case]
        assert result["before"] > 1e-2, "the engine already had these weights: the refit proves nothing"
        assert result["after"] < 1e-4
        assert result["metrics"]["refit/bytes"] == _model_bytes(ENGINES[case.split("/")[0]])
        assert result["metrics"]["refit/checksum_ok"] == 1.0


def test_optimizer_step_reaches_engine_only_through_refit(ranks):
    for rank in ranks:
        step = rank["step"]
        old, stale, new = (sum(step[k]["engine"], []) for k in ("old", "stale", "new"))
        assert old == step["old"]["megatron"]  # greedy decoding agrees before the step
        assert step["stale_vs_new"] > 1e-2  # the step changed the model ...
        assert step["stale_vs_old"] < 1e-4 and stale == old  # ... but not the engine, until the refit:
        assert step["fresh_vs_new"] < 1e-4 and new == step["new"]["megatron"]
        assert new != old
        assert step["stale_checksum_ok"] == 0.0 and step["checksum_ok"] == 1.0  # the checksum sees it too


def test_refit_peak_rss_is_two_buckets(ranks):
    """The stream holds one bucket plus the tensor in flight (gathered, received), at most twice the
    largest HF tensor (0.5 MiB here: a row-parallel one is gathered, then transposed), so < 2 buckets;
    the engine copies each tensor into its live weights and allocates nothing."""
    config, bucket = ENGINES["tied"], ENGINE.refit_bucket_mb * MIB
    budget = 2 * bucket + MIB // 2  # + allocator and first-call bookkeeping
    for rank in ranks:
        for tie, layout in CASES:
            assert rank[f"{tie}/{layout}"]["rss"] <= budget, (tie, layout, rank[f"{tie}/{layout}"]["rss"])
        # control: the meter sees the whole model when the stream is materialised before the engine takes it
        assert rank["listed_rss"] > _model_bytes(config) * 0.9


@pytest.mark.parametrize(("case", "tensor"), [("ffn", "model.layers.0.mlp.gate_proj.weight"),
                                              ("tied->untied", "lm_head.weight"), ("untied->tied", "lm_head.weight")])
def test_mismatched_refit_names_tensor_and_keeps_weights(ranks, case, tensor):
    for rank in ranks:
        result = rank[case]
        assert result["error"] is not None and f"{tensor}:" in result["error"]
        assert result["after"] == result["before"]
