"""Exact resume under kill -9, at scale: kill the tiny default run at N random moments (default 20),
restart it each time, and compare every step's metrics with an uninterrupted run. Prints one JSON line.

    python bench/resume.py [--kills 20] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_grpo.trainer.logger import read_metrics  # noqa: E402
from tests.trainer.harness import kill_and_resume, mismatches, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="kill -9 points")
    parser.add_argument("--steps", type=int, default=40, help="training steps of the run")
    args = parser.parse_args()
    overrides = [f"trainer.max_steps={args.steps}", "checkpoint.save_freq=2", "checkpoint.keep_last=2"]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = train(Path(tmp) / "reference", *overrides, timeout=3600)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        kills = kill_and_resume(Path(tmp) / "killed", overrides, args.kills, args.steps, seed=1)
        diffs = mismatches(Path(tmp) / "killed", read_metrics(Path(tmp) / "reference"))
    print(json.dumps({"case": "kill9_resume", "steps": args.steps, "kills": kills, "mismatches": len(diffs),
                      "first_mismatch": diffs[0] if diffs else None, "exact": not diffs,
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
