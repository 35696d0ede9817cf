"""Exact resume under kill -9, at scale: kill the tiny default run at N random moments (default 20),
restart it each time, and compare every step's metrics with an uninterrupted run. Two cases: synchronous
saves every 2 steps, and async saves every step (``checkpoint.async_save``: a write is in flight at most
moments, so many kills land inside one). Each kill must also take every process of the run with it.
Prints one JSON line per case.

    python bench/resume.py [--kills 20] [--steps 40] [--cases sync,async]
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

CASES = {"sync": ["checkpoint.save_freq=2"], "async": ["checkpoint.save_freq=1", "checkpoint.async_save=true"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="kill -9 points per case")
    parser.add_argument("--steps", type=int, default=40, help="training steps of the run")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {list(CASES)}")
    args = parser.parse_args()
    base = [f"trainer.max_steps={args.steps}", "checkpoint.keep_last=2"]
    with tempfile.TemporaryDirectory() as tmp:
        proc = train(Path(tmp) / "reference", *base, *CASES["sync"], timeout=3600)  # the schedule changes no number
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        for case in args.cases.split(","):
            start = time.perf_counter()
            killed = Path(tmp) / f"killed_{case}"
            kills = kill_and_resume(killed, [*base, *CASES[case]], args.kills, args.steps, seed=1)
            diffs = mismatches(killed, read_metrics(Path(tmp) / "reference"))
            print(json.dumps({"case": f"kill9_resume_{case}", "steps": args.steps, "kills": kills,
                              "mismatches": len(diffs), "first_mismatch": diffs[0] if diffs else None,
                              "exact": not diffs, "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
