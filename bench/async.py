"""On-policy against one-step off-policy rollouts, same run: the tiny task (or any config) with its
engine in a process of its own, at ``rollout.max_staleness`` 0 and then 1, interleaved over rounds.
Prints one JSON line per round and a summary: mean step time of each, their ratio, and how much of
the generation the async run hid behind training (1 - its rollout wait / the on-policy rollout wait).

    python bench/async.py [--steps 20] [--rounds 2] [KEY=VALUE ...]

On 2 shared cores engine and trainer compete for the same CPUs, so the overlap is bounded by the
machine, not by the loop; the figures that matter come from GPUs of their own.
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


def _run(run_dir: Path, staleness: int, steps: int, extra: list[str]) -> dict:
    proc = train(run_dir, "rollout.placement=disaggregated", f"rollout.max_staleness={staleness}",
                 f"trainer.max_steps={steps}", "checkpoint.save_freq=0", "trainer.test_freq=0", *extra,
                 timeout=7200)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    rows = read_metrics(run_dir)[2:]  # steps 1-2: warm-up (compile caches, the first prefetch)
    mean = lambda key: statistics.fmean(r[key] for r in rows)  # noqa: E731
    return {"step_s": mean("time/step"), "rollout_wait_s": mean("time/rollout_wait"), "update_s": mean("time/update"),
            "refit_s": mean("time/refit"), "engine_idle_s": mean("engine/idle_s"), "reward": mean("reward/mean")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="config overrides for both runs")
    args = parser.parse_args()
    ratios, hidden = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            on = _run(Path(tmp) / f"on{round_}", 0, args.steps, args.overrides)
            off = _run(Path(tmp) / f"off{round_}", 1, args.steps, args.overrides)
            ratios.append(on["step_s"] / off["step_s"])
            hidden.append(1 - off["rollout_wait_s"] / on["rollout_wait_s"])
            print(json.dumps({"round": round_ + 1, "on_policy": on, "one_step_off": off,
                              "speedup": round(ratios[-1], 3), "generation_hidden": round(hidden[-1], 3)}))
    print(json.dumps({"case": "async_vs_on_policy", "steps": args.steps, "rounds": args.rounds,
                      "speedup_mean": round(statistics.fmean(ratios), 3),
                      "generation_hidden_mean": round(statistics.fmean(hidden), 3)}))


if __name__ == "__main__":
    main()
