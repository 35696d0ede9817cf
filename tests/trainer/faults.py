"""The trainer CLI with faults injected, for tests: ``python tests/trainer/faults.py NAN_STEPS CLI-ARGS...``.

The seam is the loop's own names: ``train_step`` is wrapped to learn the step, and ``update_policy`` to
turn that step's rewards NaN before the update. Production code reads no fault switches.
"""

from __future__ import annotations

import sys

import torch

from megatron_grpo import cli
from megatron_grpo.trainer import loop


def inject_nan_rewards(steps: set[int]) -> None:
    real_step, real_update, current = loop.train_step, loop.update_policy, {}

    def train_step(run):
        current["step"] = run.step + 1
        return real_step(run)

    def update_policy(policy, rollout, *args, **kwargs):
        if current.get("step") in steps:
            rollout.rewards = torch.full_like(rollout.rewards, float("nan"))
        return real_update(policy, rollout, *args, **kwargs)

    loop.train_step, loop.update_policy = train_step, update_policy


if __name__ == "__main__":
    inject_nan_rewards({int(s) for s in sys.argv[1].split(",")})
    sys.exit(cli.main(sys.argv[2:]))
