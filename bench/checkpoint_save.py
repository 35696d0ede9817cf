"""What a checkpoint save costs a training step, synchronous against async (``checkpoint.async_save``).

    .venv/bin/python bench/checkpoint_save.py [--shape 0.1b] [--steps 5]

Three runs of the real trainer on the embedded task with the same model (default: the ~107M Qwen3-shaped
model of bench/policy_step.py, ~1.3 GB of weights and Adam state per save): no save until the end, a
synchronous save every step, an async save every step. Per run, the mean over steps 2.. of the time a step
takes including the time the loop was held up by saves (``time/step`` + ``time/checkpoint``). The cost of a
save is that minus the no-save run's; the printed ratio is async cost / sync cost (below 1: async saves
stall training less). On 2 shared cores the async writer competes with the step for the CPU, which a GPU
node's spare host cores absorb. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from grpo_step import ROOT, train_command, write_model_config

CASES = {"no_save": ["checkpoint.save_freq=0"], "sync": ["checkpoint.save_freq=1"],
         "async": ["checkpoint.save_freq=1", "checkpoint.async_save=true"]}


def run(name: str, shape: str, steps: int, work: Path) -> dict:
    config = write_model_config(shape, 16, 4096, work / "model")
    run_dir = work / name
    cmd = [*train_command(run_dir, config, shape, 16, steps), *CASES[name], "checkpoint.keep_last=1"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: trainer exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    later = rows[1:]   # step 1 has vLLM's warm-up; step 2 on carries step 1's save
    return {"step_s": statistics.fmean(r["time/step"] + r["time/checkpoint"] for r in later),
            "held_up_s": statistics.fmean(r["time/checkpoint"] for r in later),
            "wall_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="0.1b", choices=("tiny", "0.1b"), help="model (bench/policy_step.py)")
    parser.add_argument("--steps", type=int, default=5, help="steps per run (the first is not counted)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="checkpoint_save_") as tmp:
        got = {name: run(name, args.shape, args.steps, Path(tmp)) for name in CASES}
    cost = {name: got[name]["step_s"] - got["no_save"]["step_s"] for name in ("sync", "async")}
    print(json.dumps({
        "bench": "checkpoint_save", "shape": args.shape, "steps_averaged": args.steps - 1,
        **{f"{name}_step_s": round(r["step_s"], 3) for name, r in got.items()},
        **{f"{name}_held_up_s": round(got[name]["held_up_s"], 3) for name in ("sync", "async")},
        **{f"{name}_save_cost_s": round(c, 3) for name, c in cost.items()},
        "async_vs_sync_cost": round(cost["async"] / cost["sync"], 3) if cost["sync"] > 0 else None,
    }))


if __name__ == "__main__":
    main()
