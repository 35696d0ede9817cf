"""Per-stage timing of whole GRPO steps (rollout, update, refit, reward) through the real trainer.

    .venv/bin/python bench/grpo_step.py [--cases tiny-32,tiny-256,0.1b-32,0.1b-256] [--steps 3]
    .venv/bin/python bench/grpo_step.py --peer-python /path/to/trl-venv/bin/python   # + TRL, same run

Each case runs ``python -m megatron_grpo train`` on the embedded tiny task as a subprocess with 8 prompts
x 8 responses and N new tokens, then reads the run's ``metrics.jsonl``. Step 1 includes vLLM's first-shape
warm-up and is reported apart; the other steps are averaged. The shape is the one to compare with TRL's
GRPOTrainer (docs/benchmarks.md).

Model configs are generated into a temp dir (the trainer builds random weights from a config alone):
``tiny`` is the embedded model (hidden 128, 2 layers) and ``0.1b`` the ~107M Qwen3-shaped model of
bench/policy_step.py, both with ``max_position_embeddings`` = prompt + N and ``--vocab`` rows (default
4096) around the 16-token tiny tokenizer. With the tokenizer's 16 rows a random model samples <eos> with
p ~ 1/16 per token and stops after ~16 tokens; with 4096 rows nearly every response runs to N tokens,
as long reasoning does. The Qwen3 tokenizer (151936 rows) would make the 0.1B model 3/4 embedding and
its time mostly the LM head, unlike the 4B target. Prints one JSON line per case.

With ``--peer-python`` (a venv with ``pip install trl``, never ``trl[vllm]``) each case then runs the same
shape through TRL's ``GRPOTrainer`` (bench/trl_peer.py: same model config, tokenizer, prompts, reward), and
the line gains ``trl_step_s`` and ``speed_vs_trl`` (TRL's seconds per step / ours: above 1, we are faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from policy_step import hf_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "megatron_grpo" / "assets" / "tiny"
MAX_PROMPT = 16  # tiny_cpu.yaml's rollout.max_prompt_length
PROMPTS, RESPONSES = 8, 8  # per step: B prompts x G responses
CASES = {"tiny-32": ("tiny", 32), "tiny-256": ("tiny", 256), "0.1b-32": ("0.1b", 32), "0.1b-256": ("0.1b", 256)}
KV_CACHE_GB = {"tiny": 0.05, "0.1b": 1.0}  # 64 x (16 + 256) tokens x 24 KiB/token for 0.1b: ~0.4 GiB
STAGES = ("time/rollout", "time/update", "time/refit", "time/step", "reward/seconds", "perf/tokens_per_s",
          "response_length/mean")


def write_model_config(shape: str, new_tokens: int, vocab: int, out_dir: Path) -> Path:
    config = hf_config(shape)
    config.update(vocab_size=vocab, max_position_embeddings=MAX_PROMPT + new_tokens)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def train_command(run_dir: Path, config: Path, shape: str, new_tokens: int, steps: int) -> list[str]:
    overrides = {
        "model.hf_config": config, "model.tokenizer": TINY, "data.batch_prompts": PROMPTS,
        "algo.mini_batch_prompts": PROMPTS, "rollout.train.n": RESPONSES,
        "rollout.train.max_response_length": new_tokens, "rollout.max_model_len": MAX_PROMPT + new_tokens,
        "rollout.kv_cache_gb": KV_CACHE_GB[shape], "trainer.max_steps": steps, "checkpoint.save_freq": 0,
        "logging.progress_bar": "false", "logging.tensorboard": "false",
    }
    return [sys.executable, "-m", "megatron_grpo", "train", "--run-dir", str(run_dir),
            *(f"{k}={v}" for k, v in overrides.items())]


def summarise(rows: list[dict]) -> dict:
    """Step 1 apart (warm-up), the mean of the later steps per stage, and derived token rates."""
    later = rows[1:] or rows
    mean = {key: statistics.fmean(r[key] for r in later) for key in STAGES}
    tokens = statistics.fmean(r["perf/tokens_per_s"] * r["time/step"] for r in later)  # prompt + response
    return {
        "steps_averaged": len(later),
        **{key.replace("/", "_"): round(value, 4) for key, value in mean.items()},
        "generated_tokens_per_s": round(PROMPTS * RESPONSES * mean["response_length/mean"] / mean["time/rollout"], 1),
        "trained_tokens_per_s": round(tokens / mean["time/update"], 1),
        "first_step_s": round(rows[0]["time/step"], 2),
        "first_rollout_s": round(rows[0]["time/rollout"], 2),
    }


def run_case(name: str, args: argparse.Namespace, work: Path) -> dict:
    shape, new_tokens = CASES[name]
    config = write_model_config(shape, new_tokens, args.vocab, work / name / "model")
    run_dir = work / name / "run"
    log = work / name / "train.log"
    start = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.run(train_command(run_dir, config, shape, new_tokens, args.steps), stdout=out,
                            stderr=subprocess.STDOUT, cwd=ROOT, timeout=args.timeout).returncode
    wall = time.perf_counter() - start
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"case {name}: trainer exited {rc}; last lines of {log}:\n{tail}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"bench": "grpo_step", "case": name, "shape": shape, "prompts": PROMPTS, "responses_per_prompt": RESPONSES,
            "max_new_tokens": new_tokens, "vocab_rows": args.vocab, **summarise(rows),
            "wall_s": round(wall, 1), "setup_and_exit_s": round(wall - sum(r["time/step"] for r in rows), 1)}


def run_peer(name: str, args: argparse.Namespace, work: Path) -> dict:
    _, new_tokens = CASES[name]
    model = work / name / "model" / "config.json"
    cmd = [args.peer_python, str(ROOT / "bench" / "trl_peer.py"), "--config", str(model),
           "--new-tokens", str(new_tokens), "--steps", str(args.steps), "--prompts", str(PROMPTS),
           "--generations", str(RESPONSES), "--out", str(work / name / "trl")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=args.timeout,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    if proc.returncode != 0:
        raise RuntimeError(f"case {name}: TRL peer exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {list(CASES)}")
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps per case (step 1 is warm-up)")
    parser.add_argument("--vocab", type=int, default=4096, help="model vocabulary rows (>= 16 tokenizer rows)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before a case is abandoned")
    parser.add_argument("--keep", default=None, help="keep run dirs here instead of a temp dir (not reused)")
    parser.add_argument("--peer-python", default=None, help="Python of a venv with trl: run TRL's GRPOTrainer too")
    args = parser.parse_args()
    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}; choose from {list(CASES)}")
    if args.keep and any((Path(args.keep) / name / "run").exists() for name in args.cases.split(",")):
        parser.error(f"--keep {args.keep} holds runs of these cases: the trainer would resume them")
    with tempfile.TemporaryDirectory(prefix="grpo_step_") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        for name in args.cases.split(","):
            ours = run_case(name, args, work)
            if args.peer_python:
                peer = run_peer(name, args, work)
                ours.update(trl_version=peer["trl_version"], trl_step_s=peer["step_s"],
                            trl_first_step_s=peer["first_step_s"],
                            speed_vs_trl=round(peer["step_s"] / ours["time_step"], 3))
            print(json.dumps(ours), flush=True)


if __name__ == "__main__":
    main()
