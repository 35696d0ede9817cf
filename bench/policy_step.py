"""Forward+backward+optimizer throughput of the Megatron policy on CPU, at TP1 and TP2.

    .venv/bin/python bench/policy_step.py [--cases tiny-tp1,tiny-tp2,0.1b-tp1,0.1b-tp2] [--min-seconds 5] [--repeat 1]

Each case runs in fresh gloo processes (one per TP rank) so its peak RSS is its own. A step is
``MegatronPolicy.train_step`` on ``--seqs`` right-padded sequences of ``--seq-len`` tokens in
micro-batches of ``--micro-seqs``, with a token-mean log-likelihood loss and the default entropy
(a no-grad metric, as in GRPO). After a warm-up step and a sizing step, enough steps to fill about
``--min-seconds`` (at least 2) are timed. The cores are split between the ranks (TP1: 2 threads,
TP2: 1 thread each), so TP1 and TP2 use the same CPU.

Shapes: ``tiny`` is the embedded default model (megatron_grpo/assets/tiny, hidden 128, 2 layers);
``0.1b`` is a Qwen3-shaped body (hidden 768, 12 layers, GQA 12/4, head_dim 64, SwiGLU 3072, qk-norm)
with a 4096-row vocabulary, ~107M parameters, so the transformer body dominates as it does at 4B.
Prints one JSON line per case and round; peak RSS is the process high-water mark (``ru_maxrss``, which psutil
does not expose), summed over ranks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
import traceback
from pathlib import Path

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "megatron_grpo" / "assets" / "tiny" / "config.json"
CASES = {"tiny-tp1": ("tiny", 1), "tiny-tp2": ("tiny", 2), "0.1b-tp1": ("0.1b", 1), "0.1b-tp2": ("0.1b", 2)}


def qwen3_0p1b_config(vocab_size: int = 4096, max_positions: int = 2048) -> dict:
    """A ~0.1B Qwen3-shaped HF config (shared with bench/grpo_step.py)."""
    return {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 768,
        "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 4, "head_dim": 64,
        "intermediate_size": 3072, "vocab_size": vocab_size, "max_position_embeddings": max_positions,
        "rms_norm_eps": 1e-6, "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
        "tie_word_embeddings": True, "hidden_act": "silu", "initializer_range": 0.02, "attention_bias": False,
        "use_sliding_window": False, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "dtype": "float32",
    }


def hf_config(shape: str) -> dict:
    return json.loads(TINY_CONFIG.read_text()) if shape == "tiny" else qwen3_0p1b_config()


def _loss_fn(total_tokens: int):
    """Token-mean negative log-likelihood, normalised by the global token count like the GRPO loss."""
    def loss_fn(logprobs, entropy, batch):
        return -logprobs.sum() / total_tokens, {"entropy": entropy.detach().sum() / total_tokens}
    return loss_fn


def _worker(rank: int, world: int, port: int, config: dict, args: argparse.Namespace, queue) -> None:
    """One rank: report its measurement, or its traceback so the parent does not wait for a timeout."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, args.cores // world))
    try:
        queue.put((rank, _measure(world, config, args)))
    except BaseException:
        queue.put((rank, traceback.format_exc()))


def _measure(world: int, config: dict, args: argparse.Namespace) -> dict:
    from megatron_grpo.config import ModelConfig, OptimizerConfig, ParallelConfig
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.launch import init_distributed, shutdown
    from megatron_grpo.model.policy import MegatronPolicy

    parallel = ParallelConfig(tensor=world)
    init_distributed(parallel, seed=0)
    arch = arch_from_dict(config)
    model_cfg = ModelConfig(hf_config="<bench>", transformer_impl="local")
    policy = MegatronPolicy(arch, model_cfg, parallel, OptimizerConfig(lr=1e-5), total_steps=10**6)
    tokens = torch.randint(3, arch.vocab_size, (args.seqs, args.seq_len), generator=torch.Generator().manual_seed(0))
    mbs = [{"tokens": tokens[i: i + args.micro_seqs]} for i in range(0, args.seqs, args.micro_seqs)]
    loss_fn = _loss_fn(tokens.numel())
    policy.train_step(mbs, loss_fn)  # warm-up: allocator, optimizer state, first-call overheads
    start = time.perf_counter()
    policy.train_step(mbs, loss_fn)
    # Every rank must run the same number of steps (they are collective): size it from the slowest rank.
    warm = torch.tensor([time.perf_counter() - start])
    torch.distributed.all_reduce(warm, op=torch.distributed.ReduceOp.MAX)
    steps = max(2, math.ceil(args.min_seconds / float(warm)))
    start = time.perf_counter()
    for _ in range(steps):
        policy.train_step(mbs, loss_fn)
    seconds = (time.perf_counter() - start) / steps
    params = sum(p.numel() for chunk in policy.model for p in chunk.parameters())
    shutdown()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"seconds": seconds, "steps": steps, "params": params, "peak_rss": peak}


def run_case(name: str, args: argparse.Namespace) -> dict:
    """Spawn one process per TP rank; combine their reports into one JSON-able row."""
    shape, tp = CASES[name]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    from megatron_grpo.launch import free_port

    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, tp, port, hf_config(shape), args, queue)) for r in range(tp)]
    for p in procs:
        p.start()
    reports = {}
    try:
        for _ in procs:
            rank, report = queue.get(timeout=args.timeout)
            if isinstance(report, str):  # its peers may be stuck in a collective: stop them all
                raise RuntimeError(f"case {name}: rank {rank} failed:\n{report}")
            reports[rank] = report
    finally:
        for p in procs:
            p.join(timeout=30 if len(reports) == tp else 0)
            if p.is_alive():
                p.kill()
    tokens = args.seqs * args.seq_len
    seconds = max(r["seconds"] for r in reports.values())
    return {
        "bench": "policy_step", "case": name, "shape": shape, "tp": tp, "threads_per_rank": max(1, args.cores // tp),
        "params_per_rank": reports[0]["params"], "tokens_per_step": tokens, "steps": reports[0]["steps"],
        "step_s": round(seconds, 4), "tokens_per_s": round(tokens / seconds, 1),
        "peak_rss_gib": round(sum(r["peak_rss"] for r in reports.values()) / 2**30, 3),
        "peak_rss_gib_per_rank": [round(reports[r]["peak_rss"] / 2**30, 3) for r in sorted(reports)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {list(CASES)}")
    parser.add_argument("--seqs", type=int, default=4, help="sequences per step")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--micro-seqs", type=int, default=2, help="sequences per micro-batch")
    parser.add_argument("--min-seconds", type=float, default=5.0, help="time about this long per case (>= 2 steps)")
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads shared by the ranks of a case")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds over the cases, interleaved, so a burst of load hits every case alike")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a case is abandoned")
    args = parser.parse_args()
    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}; choose from {list(CASES)}")
    for round_ in range(args.repeat):
        for name in args.cases.split(","):
            print(json.dumps({**run_case(name, args), "round": round_}), flush=True)


if __name__ == "__main__":
    main()
