"""The project's GPU check: the real GPU path on one H100/H200, as JSON lines (docs/gpu.md).

    python tools/gpu_check.py              # one GPU, under 8 minutes
    python tools/gpu_check.py --dry-run    # the same code on CPU at tiny shapes (CI runs this)

Needs torch with CUDA and megatron-core (a wheel is enough: docs/gpu.md has the download line); no network.
Parts whose library is missing (Transformer Engine, transformers, vLLM) print ``"skipped"`` with the reason.

1. ``environment``: versions, the device, which optional libraries import.
2. ``policy``: the Qwen3 policy (local layers, and Transformer Engine's when importable) in fp32 and bf16,
   imported from a random transformers model: log-prob parity with transformers on the same device, then
   a forward, backward and optimizer step (finite loss and grad norm, weights moved).
3. ``throughput``: train-step tokens/s, MFU and peak memory for 0.6B- and 4B-shaped random models at 8k-
   and 32k-token micro-batches (bf16; 4B at 32k with full recompute), beside ``plan``'s formula peak.
4. ``reference``: the KL term's frozen reference (``model/reference.py``): swapped in, its log-probs equal
   the initial policy's after an update, the policy's weights come back bit-exact; swap time and GB/s.
5. ``refit`` (vLLM importable): policy -> colocated engine, checksums and ``rollout/logprob_abs_diff``.
6. ``ipc``: a refit bucket lent by CUDA-IPC handle (``refit.ipc``) to a fresh process on the same GPU, which
   checks every tensor's bytes and copies them out: its time against a plain device copy of the bucket.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 128,
        "vocab_size": 256, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "tie_word_embeddings": True, "hidden_act": "silu", "attention_bias": False, "torch_dtype": "float32"}
PEAK_TFLOPS = {"bf16": 989.4, "fp32": 494.7}  # dense H100/H200 SXM tensor cores (fp32 as TF32)


def emit(check: str, **fields) -> None:
    print(json.dumps({"check": check, **fields}), flush=True)


def importable(name: str) -> str | None:
    try:
        importlib.import_module(name)
        return None
    except Exception as exc:  # any failure to import means the part is skipped, with the reason
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def model_config(name: str, dry: bool) -> dict:
    if dry:
        return dict(TINY)
    return json.loads((REPO / "configs" / "models" / f"qwen3-{name}-base.config.json").read_text())


def init(parallel) -> None:
    from megatron_grpo.launch import dist_env, init_distributed

    init_distributed(parallel, seed=0, env=dist_env({}))  # one process, a free port


# ---- 2. the policy against transformers ------------------------------------------------------------


def policy_check(impl: str, dtype: str, dry: bool, tokens: int) -> dict:
    import torch

    from megatron_grpo import platform
    from megatron_grpo.config import ModelConfig, OptimizerConfig, ParallelConfig
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.model.policy import MegatronPolicy

    config = model_config("0.6b", dry) | ({} if dry else {"num_hidden_layers": 4})
    arch = arch_from_dict(config)
    torch.manual_seed(0)
    weights, reference = _transformers_reference(config, tokens)
    policy = MegatronPolicy(arch, ModelConfig(hf_config="<inline>", dtype=dtype, transformer_impl=impl),
                            ParallelConfig(), OptimizerConfig(lr=1e-3, weight_decay=0.0), total_steps=2,
                            hf_weights=weights)
    batch = {"tokens": reference["tokens"]}
    out = {}
    ours = policy.logprobs([batch])[0]["logprobs"][:, :-1]
    if reference.get("logprobs") is not None:
        out["logprob_max_abs_diff_vs_transformers"] = float((ours.float().cpu() - reference["logprobs"]).abs().max())
    before = [p.detach().float().clone() for p in policy.model[0].parameters()][:3]
    metrics, applied, grad_norm = policy.train_step([batch], lambda lp, ent, mb: (-lp[:, :-1].float().mean(),
                                                                                  {"nll": -lp[:, :-1].float().mean()}))
    after = list(policy.model[0].parameters())[: len(before)]
    moved = max(float((p.detach().float() - b).abs().max()) for p, b in zip(after, before, strict=True))
    out.update(loss=metrics["loss"], grad_norm=grad_norm, applied=applied, max_weight_change=moved,
               device=str(platform.device()))
    return out


def _transformers_reference(config: dict, tokens: int):
    """HF weights of a random transformers Qwen3 and its fp32 log-probs of random tokens on the device."""
    import torch

    from megatron_grpo import platform

    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config["vocab_size"], (1, tokens), generator=gen)
    skipped = importable("transformers")
    if skipped:
        from megatron_grpo.families import arch_from_dict
        from megatron_grpo.model.init import RandomHFWeights

        return dict(RandomHFWeights(arch_from_dict(config), seed=0)), {"tokens": ids, "skipped": skipped}
    from transformers import Qwen3Config, Qwen3ForCausalLM

    model = Qwen3ForCausalLM(Qwen3Config(**config)).to(platform.device()).eval()
    with torch.no_grad():
        logits = model(ids.to(platform.device())).logits.float()
    logprobs = torch.log_softmax(logits, -1)[:, :-1].gather(-1, ids[:, 1:, None].to(logits.device))[..., 0]
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items() if k != "lm_head.weight"
               or not config["tie_word_embeddings"]}
    return weights, {"tokens": ids, "logprobs": logprobs.cpu()}


# ---- 3. throughput ----------------------------------------------------------------------------------


def throughput_check(shape: str, tokens: int, dry: bool, steps: int) -> dict:
    import torch

    from megatron_grpo import platform
    from megatron_grpo.config import ModelConfig, OptimizerConfig, ParallelConfig, load_config
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.model.builder import build_model, build_optimizer, wrap_ddp
    from megatron_grpo.model.forward import train_micro_batches
    from megatron_grpo.plan.estimate import matmul_params, plan

    config = model_config(shape, dry)
    arch = arch_from_dict(config)
    seq = min(tokens, 8192 if not dry else 64)
    recompute = "full" if shape == "4b" and tokens > 8192 else "none"
    model_cfg = ModelConfig(hf_config="<inline>", dtype="bf16", recompute=recompute, transformer_impl="auto")
    par = ParallelConfig()
    chunks = wrap_ddp(build_model(arch, model_cfg, par), par)
    optimizer, _ = build_optimizer(chunks, OptimizerConfig(lr=1e-6), model_cfg, par, total_steps=steps + 1)
    batch = {"tokens": torch.randint(0, arch.vocab_size, (tokens // seq, seq))}
    loss = lambda lp, ent, mb: (-lp.float().mean(), {})  # noqa: E731
    if platform.has_cuda():
        torch.cuda.reset_peak_memory_stats()
    train_micro_batches(chunks, optimizer, [batch], arch.vocab_size, 1.0, loss, "off")  # warm-up
    platform.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        train_micro_batches(chunks, optimizer, [batch], arch.vocab_size, 1.0, loss, "off")
    platform.synchronize()
    seconds = (time.perf_counter() - start) / steps
    attn = arch.num_layers * arch.num_attention_heads * arch.head_dim
    flops = 3 * tokens * (2 * matmul_params(arch) + 4 * attn * seq / 2)  # model FLOPs, recompute not counted
    cfg = load_config(None, [f"algo.micro_batch_tokens={tokens}", "model.dtype=bf16", f"model.recompute={recompute}",
                             f"rollout.max_prompt_length={seq // 2}", f"rollout.train.max_response_length={seq // 2}",
                             f"rollout.max_model_len={seq}", "rollout.val.max_response_length=1"])
    formula = plan(dataclasses.replace(cfg, model=model_cfg), arch, 1, 1, 141).train.peak
    out = {"shape": f"tiny (for {shape})" if dry else shape, "tokens": tokens, "sequences": tokens // seq,
           "recompute": recompute,
           "tokens_per_s": tokens / seconds, "step_s": seconds,
           "mfu": flops / seconds / (PEAK_TFLOPS["bf16"] * 1e12), "formula_peak_gib": formula / 2**30}
    if platform.has_cuda():
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del chunks, optimizer
    platform.empty_cache()
    return out


# ---- 4. refit into vLLM -----------------------------------------------------------------------------


def refit_check(dry: bool) -> dict:
    import torch

    from megatron_grpo.algo import RolloutBatch
    from megatron_grpo.config import ModelConfig, OptimizerConfig, ParallelConfig, RolloutConfig, SamplingConfig
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.model.policy import MegatronPolicy
    from megatron_grpo.refit.stream import refit
    from megatron_grpo.rollout.groups import ColocatedEngines
    from megatron_grpo.rollout.vllm_engine import build_engine
    from megatron_grpo.trainer.probe import logprob_probe

    config = model_config("0.6b", dry) | ({} if dry else {"num_hidden_layers": 4})
    arch = arch_from_dict(config)
    policy = MegatronPolicy(arch, ModelConfig(hf_config="<inline>", dtype="bf16"), ParallelConfig(),
                            OptimizerConfig(), total_steps=1, seed=5)
    with tempfile.TemporaryDirectory() as model_dir:
        (Path(model_dir) / "config.json").write_text(json.dumps(config))
        engine = build_engine(model_dir, REPO / "megatron_grpo" / "assets" / "tiny",
                              RolloutConfig(max_model_len=512, max_prompt_length=256, kv_cache_gb=0.05,
                                            gpu_memory_utilization=0.3, val=SamplingConfig(max_response_length=16)),
                              "bf16", load_weights=False)
        try:
            metrics = refit(policy, engine, torch.bfloat16)
            ids = torch.randint(0, arch.vocab_size, (2, 96), generator=torch.Generator().manual_seed(2))
            rollout = RolloutBatch(input_ids=ids, prompt_lens=torch.tensor([32, 32]),
                                   response_lens=torch.tensor([64, 64]), sampler_logprobs=torch.zeros(2, 64),
                                   rewards=torch.zeros(2), truncated=torch.zeros(2, dtype=torch.bool), group_size=2)
            metrics.update(logprob_probe(policy, ColocatedEngines(engine), rollout))
        finally:
            engine.close()
    return metrics


def reference_check(dry: bool) -> dict:
    import torch

    from megatron_grpo import platform
    from megatron_grpo.config import ModelConfig, OptimizerConfig, ParallelConfig
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.model.policy import MegatronPolicy
    from megatron_grpo.model.reference import ReferencePolicy

    config = model_config("0.6b", dry) | ({} if dry else {"num_hidden_layers": 4})
    arch = arch_from_dict(config)
    policy = MegatronPolicy(arch, ModelConfig(hf_config="<inline>", dtype="bf16"), ParallelConfig(),
                            OptimizerConfig(lr=1e-3, weight_decay=0.0), total_steps=2, seed=7)
    reference = ReferencePolicy(policy.model)
    batch = {"tokens": torch.randint(0, arch.vocab_size, (2, 64), generator=torch.Generator().manual_seed(4))}
    initial = policy.logprobs([batch])[0]["logprobs"].float()
    policy.train_step([batch], lambda lp, ent, mb: (-lp.float().mean(), {}))
    trained = [p.detach().clone() for chunk in policy.model for p in chunk.parameters()]
    platform.synchronize()
    start = time.perf_counter()
    with reference.swapped_in():
        swap_s = time.perf_counter() - start
        ref = policy.logprobs([batch])[0]["logprobs"].float()
    round_trip_s = time.perf_counter() - start
    back = all(torch.equal(p, t) for p, t in zip((p for c in policy.model for p in c.parameters()), trained,
                                                   strict=True))
    return {"reference_gib": reference.nbytes / 2**30, "swap_in_s": round(swap_s, 4),
            "round_trip_s": round(round_trip_s, 4), "swap_gb_per_s": round(2 * reference.nbytes / swap_s / 1e9, 2),
            "ref_vs_initial_max_abs": float((ref - initial).abs().max()), "policy_back_exact": back,
            "policy_moved_max_abs": float((policy.logprobs([batch])[0]["logprobs"].float() - initial).abs().max())}


def ipc_check(dry: bool) -> dict:
    """Lend a bucket of bf16 tensors (512 MiB; 2 MiB in the dry run) to ``--borrow`` in a fresh process."""
    import pickle
    import subprocess

    import torch

    from megatron_grpo import platform
    from megatron_grpo.refit import ipc, transfer

    rows = 16 if dry else 4096
    gen = torch.Generator(device=platform.device()).manual_seed(3)
    bucket = [(f"t{i}", torch.randn(rows, 8192, device=platform.device(), dtype=torch.bfloat16, generator=gen))
              for i in range(8)]
    metas, flat = transfer.pack(bucket)
    copy = torch.empty_like(flat)
    platform.synchronize()
    start = time.perf_counter()
    copy.copy_(flat)
    platform.synchronize()
    memcpy_s = time.perf_counter() - start
    lent = ipc.lend(flat)
    try:
        proc = subprocess.run([sys.executable, __file__, "--borrow"], input=pickle.dumps((metas, lent.handle)),
                              capture_output=True, timeout=300)
    finally:
        lent.release()
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode()[-1500:])
    got = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return {"bucket_mb": flat.numel() >> 20, "bytes_ok": got["bytes_ok"], "borrow_s": got["seconds"],
            "memcpy_s": round(memcpy_s, 6), "borrow_vs_memcpy": round(got["seconds"] / memcpy_s, 2)}


def borrow() -> int:
    """``--borrow``: open the handle on stdin, check the bytes, copy every tensor out (as a weight loader
    would), report on stdout."""
    import pickle

    import torch

    from megatron_grpo.refit import ipc, transfer

    metas, handle = pickle.load(sys.stdin.buffer)
    device = torch.device("cuda", 0) if handle.kind == "cuda" else torch.device("cpu")
    start = time.perf_counter()
    borrowed = ipc.Borrowed(handle, device)
    try:
        tensors = transfer.unpack(metas, borrowed.tensor)
        copies = [t.clone() for _, t in tensors]
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        ok = len(copies) == len(metas)
        del tensors, copies
    except transfer.TransferError as exc:
        seconds, ok = time.perf_counter() - start, str(exc)
    finally:
        borrowed.close()
    print(json.dumps({"bytes_ok": ok, "seconds": round(seconds, 6)}))
    return 0


# ---- main ---------------------------------------------------------------------------------------------


def run(name: str, fn, *args, **fields) -> None:
    start = time.perf_counter()
    try:
        emit(name, **fields, **fn(*args), seconds=round(time.perf_counter() - start, 2))
    except Exception as exc:  # every part reports; one failure does not hide the others
        emit(name, **fields, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-2000:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: the same code paths")
    parser.add_argument("--steps", type=int, default=3, help="timed train steps per throughput case")
    parser.add_argument("--borrow", action="store_true", help=argparse.SUPPRESS)  # the ipc part's other process
    args = parser.parse_args(argv)
    if args.borrow:
        return borrow()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    import torch

    from megatron_grpo import platform
    from megatron_grpo.config import ParallelConfig

    if not args.dry_run and not torch.cuda.is_available():
        emit("environment", error="no CUDA device: run with --dry-run on CPU")
        return 2
    missing = {lib: importable(lib) for lib in ("transformer_engine", "transformers", "vllm")}
    import megatron.core

    platform.setup_platform("cpu" if args.dry_run else "cuda", local_rank=0)
    init(ParallelConfig())
    emit("environment", torch=torch.__version__, megatron_core=megatron.core.__version__, dry_run=args.dry_run,
         device=torch.cuda.get_device_name(0) if platform.has_cuda() else "cpu",
         capability=list(torch.cuda.get_device_capability(0)) if platform.has_cuda() else None,
         missing={k: v for k, v in missing.items() if v})
    impls = ["local"] + ([] if missing["transformer_engine"] or args.dry_run else ["transformer_engine"])
    if "transformer_engine" not in impls:
        emit("policy", impl="transformer_engine", skipped=missing["transformer_engine"] or "dry run: CPU")
    tokens = 64 if args.dry_run else 512
    for impl in impls:
        for dtype in ("fp32", "bf16"):
            run("policy", policy_check, impl, dtype, args.dry_run, tokens, impl=impl, dtype=dtype,
                parity="skipped: " + missing["transformers"] if missing["transformers"] else "transformers")
    for shape in ("0.6b", "4b"):
        for micro in ((64, 256) if args.dry_run else (8192, 32768)):
            run("throughput", throughput_check, shape, micro, args.dry_run, args.steps)
    run("reference", reference_check, args.dry_run)
    if missing["vllm"]:
        emit("refit", skipped=missing["vllm"])
    else:
        run("refit", refit_check, args.dry_run)
    run("ipc", ipc_check, args.dry_run)
    from megatron_grpo.launch import shutdown

    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
