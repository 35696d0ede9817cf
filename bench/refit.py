"""Refit benchmark: seconds to stream a Megatron policy into its colocated vLLM engine (the trainer's
``refit.stream``), next to a plain memcpy of the same bytes in the same process, and the engine's
rollout tokens/s. Random Qwen3-shaped models, every rank with its own engine (dummy weights at start).

Default: ~0.1B (fp32, bf16) at TP1 with 64 MB / 512 MB / 2 GB buckets, ~5 min on 2 cores. ``--models
0.6b`` is Qwen3-0.6B's shape (opt-in: memory), ``--tp 1 2`` runs every case at TP1 and TP2 (2 ranks, each
with its own engine).
The processes run with OMP_NUM_THREADS=1 (tests/dist.py), so a TP1 case uses one core for both the
refit and the memcpy baseline.

One JSON line per case: case, bytes (one full copy of the weights), first_refit_s (into the fresh
engine), refit_s (best of the next ``--repeats``), memcpy_s (best of 5: one ``copy_`` of ``bytes`` into a
preallocated, touched buffer), ratio_to_memcpy, peak_rss_delta_bytes (first refit into a fresh engine,
max over ranks, measured in separate processes: see ``worker``), tensors,
allgather_s (TP>1 only: one gloo all-gather of ``bytes`` over the TP ranks, the transport floor),
gen_tokens_per_s (the engine's, in the 512 MB case only: greedy decode, batch ``--gen-batch``). Each case
runs in fresh processes.

Usage: ``python bench/refit.py [--models 0.1b 0.6b] [--dtypes bf16] [--buckets 512] [--tp 1 2] | grep '^{'``
(vLLM logs to stdout too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.dist import run_distributed  # noqa: E402
from tests.refit.rss import peak_rss_growth  # noqa: E402

MIB = 2**20
BUCKETS_MB = (64, 512, 2048)
GEN_BUCKET_MB = 512  # engine speed does not depend on the bucket: measured once, in this case
GEN_TOKENS, PROMPT_TOKENS = 64, 16


def qwen3_shape(hidden: int, layers: int, heads: int, kv: int, head_dim: int, ffn: int, vocab: int) -> dict:
    return {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": hidden,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": head_dim,
        "intermediate_size": ffn, "vocab_size": vocab, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "tie_word_embeddings": True, "hidden_act": "silu", "initializer_range": 0.02,
        "attention_bias": False, "torch_dtype": "bfloat16",
    }


MODELS = {
    "0.1b": qwen3_shape(768, 12, 8, 4, 64, 2048, 32000),          # 95M parameters
    "0.6b": qwen3_shape(1024, 28, 16, 8, 128, 3072, 151936),      # Qwen3-0.6B's shape, 596M
}


def memcpy_seconds(nbytes: int, repeats: int) -> float:
    """Best time of one ``copy_`` of ``nbytes`` between two preallocated, already touched buffers."""
    src = torch.ones(nbytes, dtype=torch.uint8)
    dst = torch.zeros(nbytes, dtype=torch.uint8)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return best


def allgather_seconds(nbytes: int, repeats: int) -> float:
    """Best time of one gloo all-gather in which every rank contributes ``nbytes / world`` and receives
    the rest: the transport a TP>1 refit cannot avoid (loopback TCP on CPU, NVLink with NCCL on GPU)."""
    import torch.distributed as dist

    world = dist.get_world_size()
    piece = torch.ones(nbytes // world, dtype=torch.uint8)
    out = torch.empty(world, nbytes // world, dtype=torch.uint8)
    best = float("inf")
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        dist.all_gather(list(out.unbind(0)), piece)
        best = min(best, time.perf_counter() - start)
    return best


def rollout_tokens_per_s(engine, batch: int) -> float:
    """Greedy decode of ``batch`` random prompts (a short warm-up call first compiles the sampler)."""
    from megatron_grpo.config.rollout import SamplingConfig

    prompts = torch.randint(3, 16, (batch, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0)).tolist()
    engine.generate(prompts[:1], SamplingConfig(n=1, temperature=0.0, max_response_length=2), seed=0)
    start = time.perf_counter()
    samples = engine.generate(prompts, SamplingConfig(n=1, temperature=0.0, max_response_length=GEN_TOKENS), seed=0)
    return sum(len(s[0].token_ids) for s in samples) / (time.perf_counter() - start)


def engine_config(bucket_mb: int):
    from megatron_grpo.config.rollout import RolloutConfig, SamplingConfig

    sampling = SamplingConfig(n=1, max_response_length=GEN_TOKENS)
    return RolloutConfig(train=sampling, val=sampling, max_prompt_length=PROMPT_TOKENS,
                         max_model_len=PROMPT_TOKENS + GEN_TOKENS, kv_cache_gb=0.25, refit_bucket_mb=bucket_mb)


def worker(config: dict, dtype: str, tp: int, bucket_mb: int, model_dir: str, phase: str, repeats: int,
           gen_batch: int) -> dict:
    """Every rank: a policy and its engine. ``memory``: peak RSS growth of the first refit into the fresh
    engine (the process runs with MALLOC_MMAP_THRESHOLD_ low, so RSS is live bytes). ``speed``: a first
    refit, then the best of ``repeats``, the baselines and the engine's decode speed (default malloc:
    the low threshold makes every tensor a fresh mapping, ~1.6x slower at 0.6B). Fresh processes per
    phase: closing a vLLM engine tears down torch.distributed, and RSS starts clean."""
    from megatron_grpo.config import ModelConfig, OptimizerConfig, ParallelConfig
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.launch import init_distributed, shutdown
    from megatron_grpo.model.builder import DTYPES
    from megatron_grpo.model.policy import MegatronPolicy
    from megatron_grpo.refit.stream import refit
    from megatron_grpo.rollout.vllm_engine import build_engine

    par = ParallelConfig(tensor=tp)
    init_distributed(par, seed=0)
    model_cfg = ModelConfig(hf_config="<inline>", transformer_impl="local", dtype=dtype)
    policy = MegatronPolicy(arch_from_dict(config), model_cfg, par, OptimizerConfig(), total_steps=1)
    engine = build_engine(model_dir, REPO / "megatron_grpo" / "assets" / "tiny", engine_config(bucket_mb), dtype,
                          load_weights=False)
    if phase == "memory":
        metrics, rss = peak_rss_growth(lambda: refit(policy, engine, DTYPES[dtype]))
        row = {"bytes": int(metrics["refit/bytes"]), "tensors": int(metrics["refit/tensors"]),
               "peak_rss_delta_bytes": rss}
    else:
        first = refit(policy, engine, DTYPES[dtype])
        nbytes = int(first["refit/bytes"])
        row = {"first_refit_s": first["refit/seconds"],
               "refit_s": min(refit(policy, engine, DTYPES[dtype])["refit/seconds"] for _ in range(repeats)),
               "memcpy_s": memcpy_seconds(nbytes, max(5, repeats))}
        if tp > 1:
            row["allgather_s"] = allgather_seconds(nbytes, max(3, repeats))
        if gen_batch:
            row["gen_tokens_per_s"] = rollout_tokens_per_s(engine, gen_batch)
    engine.close()
    shutdown()
    return row


def cases(args: argparse.Namespace):
    for name in args.models:
        for dtype in args.dtypes:
            for tp in args.tp:
                for bucket_mb in args.buckets:
                    yield name, dtype, tp, bucket_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=["0.1b"],
                        help="0.6b needs ~11 GB RAM in bf16 (policy with fp32 main params and grads), ~20 GB in fp32")
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--buckets", type=int, nargs="+", default=list(BUCKETS_MB), help="refit_bucket_mb values")
    parser.add_argument("--tp", type=int, nargs="+", default=[1], help="policy TP sizes (TP ranks = processes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gen-batch", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(REPO / ".cache" / "torchinductor"))
    with tempfile.TemporaryDirectory() as tmp:
        for name, dtype, tp, bucket_mb in cases(args):
            model_dir = Path(tmp) / name
            model_dir.mkdir(exist_ok=True)
            (model_dir / "config.json").write_text(json.dumps(MODELS[name]))
            gen_batch = args.gen_batch if bucket_mb == GEN_BUCKET_MB else 0
            run = partial(run_distributed, worker, tp, MODELS[name], dtype, tp, bucket_mb, str(model_dir),
                          timeout=3600)
            os.environ["MALLOC_MMAP_THRESHOLD_"] = str(64 << 10)  # freed tensors leave RSS: the peak is live bytes
            memory = run("memory", 0, 0)
            del os.environ["MALLOC_MMAP_THRESHOLD_"]
            row = {**memory[0], **run("speed", args.repeats, gen_batch)[0],
                   "peak_rss_delta_bytes": max(r["peak_rss_delta_bytes"] for r in memory)}
            row["ratio_to_memcpy"] = row["refit_s"] / row["memcpy_s"]
            if "allgather_s" in row:
                row["ratio_to_allgather"] = row["refit_s"] / row["allgather_s"]
            print(json.dumps({"case": f"{name}/{dtype}/tp{tp}/bucket{bucket_mb}MB", **row}), flush=True)

if __name__ == "__main__":
    main()
