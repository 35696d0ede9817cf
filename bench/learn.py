"""Does the embedded default learn? The trainer's acceptance criterion, measured end to end.

    .venv/bin/python bench/learn.py [--keep DIR] [KEY=VALUE ...]

Runs ``python -m megatron_grpo train`` with the embedded tiny CPU config (a random Qwen3 learns
(a + b) mod 10 by GRPO alone, 300 steps) in a fresh run dir, then reads ``metrics.jsonl``. Passes when
the mean training reward of the last 20 steps is >= 0.6, at least 3x that of the first 20 steps, and
the whole run (start-up included) takes <= 10 minutes. Extra KEY=VALUE overrides go to the trainer
(e.g. ``trainer.max_steps=40`` for a smoke run, which is not expected to pass). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 20
MIN_FINAL_REWARD = 0.6
MIN_RATIO = 3.0
MAX_WALL_S = 600.0


def judge(rewards: list[float], wall_s: float) -> dict:
    """The criterion over per-step mean training rewards (pure, so its thresholds read in one place)."""
    first = statistics.fmean(rewards[:WINDOW])
    last = statistics.fmean(rewards[-WINDOW:])
    ratio = last / first if first > 0 else float("inf")
    checks = {"final_reward_ok": last >= MIN_FINAL_REWARD, "ratio_ok": ratio >= MIN_RATIO,
              "wall_ok": wall_s <= MAX_WALL_S}
    return {"steps": len(rewards), "first20_reward": round(first, 4), "last20_reward": round(last, 4),
            "ratio": round(ratio, 2), "wall_s": round(wall_s, 1), **checks, "passed": all(checks.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="trainer config overrides")
    parser.add_argument("--keep", default=None, help="new run dir to keep (default: a temp dir)")
    args = parser.parse_args()
    if args.keep and Path(args.keep).exists():
        parser.error(f"--keep {args.keep} exists: the trainer would resume it instead of learning from scratch")
    with tempfile.TemporaryDirectory(prefix="learn_") as tmp:
        run_dir = Path(args.keep or Path(tmp) / "run")
        log = Path(tmp) / "train.log"
        start = time.perf_counter()
        with log.open("w") as out:
            rc = subprocess.run([sys.executable, "-m", "megatron_grpo", "train", "--run-dir", str(run_dir),
                                 *args.overrides], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT).returncode
        wall = time.perf_counter() - start
        if rc != 0:
            sys.stderr.write("".join(log.read_text().splitlines(keepends=True)[-30:]))
            print(json.dumps({"bench": "learn", "error": f"trainer exited {rc}", "passed": False}))
            return 1
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    result = judge([r["reward/mean"] for r in rows], wall)
    result["seconds_per_step"] = round(statistics.fmean(r["time/step"] for r in rows), 3)
    print(json.dumps({"bench": "learn", **result}), flush=True)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
