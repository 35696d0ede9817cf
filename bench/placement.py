"""Where the engines of a colocated job live, same run: two trainer ranks with a TP-1 engine each (the
baseline), the two as one TP-2 engine in their processes, and that engine in a process of its own fed
lent buckets (``colocated_process``). Interleaved over rounds; prints one JSON line per round and a
summary of each placement's step, rollout and refit time as ratios to the baseline.

    python bench/placement.py [--steps 12] [--rounds 2] [KEY=VALUE ...]

On 2 shared CPU cores a TP-2 engine splits one forward over both cores that two TP-1 engines already
fill, and the lent buckets are a shared-memory copy; what the TP-2 placements buy on GPU (1/N of the
engine's weights per GPU) does not show here: these figures bound their overhead, they are not speedups.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_grpo.trainer.logger import read_metrics  # noqa: E402
from tests.trainer.harness import train  # noqa: E402

PLACEMENTS = {
    "colocated_tp1": ["rollout.tensor_parallel=1"],
    "colocated_tp2": ["rollout.tensor_parallel=2"],
    "colocated_process_tp2": ["rollout.tensor_parallel=2", "rollout.placement=colocated_process"],
}
KEYS = {"step_s": "time/step", "rollout_s": "time/rollout", "refit_s": "time/refit", "update_s": "time/update"}


def _run(run_dir: Path, placement: list[str], steps: int, extra: list[str]) -> dict:
    proc = train(run_dir, *placement, f"trainer.max_steps={steps}", "checkpoint.save_freq=0", "trainer.test_freq=0",
                 *extra, nproc=2, timeout=7200)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    rows = read_metrics(run_dir)[2:]  # steps 1-2: warm-up (compile caches)
    return {name: statistics.fmean(r[key] for r in rows) for name, key in KEYS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="config overrides for every run")
    args = parser.parse_args()
    ratios: dict[str, dict[str, list[float]]] = {p: {k: [] for k in KEYS} for p in PLACEMENTS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            got = {p: _run(Path(tmp) / f"{p}{round_}", extra, args.steps, args.overrides)
                   for p, extra in PLACEMENTS.items()}
            base = got["colocated_tp1"]
            for p, figures in got.items():
                for k in KEYS:
                    ratios[p][k].append(figures[k] / base[k])
            print(json.dumps({"round": round_ + 1, **got}))
    print(json.dumps({"case": "placement_vs_colocated_tp1", "steps": args.steps, "rounds": args.rounds,
                      **{p: {f"{k}_ratio": round(statistics.fmean(v), 3) for k, v in r.items()}
                         for p, r in ratios.items()}}))


if __name__ == "__main__":
    main()
