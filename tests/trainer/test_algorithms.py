"""Every registered loss and advantage estimator, KL on (in the loss, in the reward) and off, the off-policy
update, dynamic sampling and overlong shaping, through the real trainer on the embedded tiny task.

GRPO+KL, GSPO and Dr.GRPO must learn it by the default run's criterion (80 steps); the other paths run a few
steps, where learning is not the point. The runs are independent single processes in the trainer tests'
lane (harness.Lane): they run side by side, each on one thread.

The tiny task's answer is one token, so sequence-level losses see one-token sequences: GSPO's sequence
ratio is its token's ratio there. The off-policy run and the multi-token run below exercise the rest.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest

from megatron_grpo.trainer.logger import read_metrics
from megatron_grpo.trainer.signals import EXIT_REQUEUE
from tests.trainer.harness import learning, mismatches, stop_with_sigterm, train

pytestmark = pytest.mark.slow

SHORT = ["checkpoint.save_freq=0", "trainer.test_freq=0"]
LEARN = ["trainer.max_steps=80", *SHORT]
KL = ["algo.kl_coef=0.04"]  # GRPO's paper value, k3 in the loss
RUNS = {
    "grpo_kl": [*LEARN, *KL],
    "gspo": [*LEARN, "algo.loss=gspo"],
    "drgrpo": [*LEARN, "algo.loss=drgrpo"],
    # 2 PPO epochs x 4 mini-batches per rollout: 8 optimizer steps, pi_old from its own forward pass
    "off_policy": ["trainer.max_steps=3", *SHORT, "algo.ppo_epochs=2", "algo.mini_batch_prompts=16"],
    # the rest at once, with responses of up to 4 tokens so the overlong shaping has room
    "cispo_rloo_kl_reward": ["trainer.max_steps=3", *SHORT, "algo.loss=cispo", "algo.advantage=rloo",
                             "algo.kl_coef=0.05", "algo.kl_in=reward", "algo.kl_estimator=k2",
                             "algo.dynamic_sampling=true", "rollout.train.max_response_length=4",
                             "algo.overlong_buffer=2", "algo.overlong_filter=true"],
}


def _run(overrides: list[str], run_dir: Path) -> tuple[Path, int, str]:
    proc = train(run_dir, *overrides, timeout=900)
    return run_dir, proc.returncode, proc.stderr


def _stop_and_resume(run_dir: Path) -> tuple[Path, int, str]:
    """GRPO+KL stopped (SIGTERM, checkpoint) after step 2 and resumed to step 5."""
    overrides = ["trainer.max_steps=80", "checkpoint.save_freq=0", "trainer.test_freq=0", *KL]
    code, err = stop_with_sigterm(run_dir, overrides)
    if code != EXIT_REQUEUE:
        return run_dir, code, err
    return _run([*[o for o in overrides if not o.startswith("trainer.max_steps")], "trainer.max_steps=5"], run_dir)


LANE = {**{f"algorithms.{name}": functools.partial(_run, overrides) for name, overrides in RUNS.items()},
        "algorithms.kl_resumed": _stop_and_resume}


@pytest.fixture
def runs(lane):
    return lambda name: lane.result(f"algorithms.{name}")


def _rows(runs, name: str) -> list[dict]:
    run_dir, code, err = runs(name)
    assert code == 0, err[-3000:]
    rows = read_metrics(run_dir)
    for row in rows:  # every logged value is finite
        bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
        assert not bad, (row["step"], bad)
    return rows


ALGO_METRICS = ("actor/pg_loss", "actor/clip_frac_low", "actor/clip_frac_high", "actor/approx_kl",
                "actor/ratio_max", "algo/adv_abs_mean", "actor/grad_norm")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.lane(f"algorithms.{n}"))
                                  for n in ("grpo_kl", "gspo", "drgrpo")])
def test_loss_learns_the_tiny_task(runs, name):
    rows = _rows(runs, name)
    first, last, learned = learning(rows)
    assert len(rows) == 80 and learned, (name, first, last)
    for key in ALGO_METRICS:
        assert key in rows[-1], key
    config = (runs(name)[0] / "config.yaml").read_text()  # the resolved config says what ran
    want = {"grpo_kl": "kl_coef: 0.04", "gspo": "loss_agg_mode: seq-mean-token-mean",
            "drgrpo": "advantage: drgrpo"}[name]
    assert want in config


@pytest.mark.lane("algorithms.grpo_kl")
def test_kl_is_zero_at_the_start_then_grows(runs):
    kl = [r["actor/kl_loss"] for r in _rows(runs, "grpo_kl")]
    assert abs(kl[0]) < 1e-9  # the policy starts as the reference
    assert max(kl[-10:]) > 1e-4 and all(k >= 0 for k in kl)  # k3 is never negative


@pytest.mark.lane("algorithms.kl_resumed", "algorithms.grpo_kl")
def test_a_resumed_kl_run_keeps_the_initial_reference(runs):
    """Rebuilt from the checkpoint the reference would equal the policy (KL 0 at the first resumed step)."""
    rows = _rows(runs, "kl_resumed")
    reference = _rows(runs, "grpo_kl")[:5]
    assert mismatches(runs("kl_resumed")[0], reference) == []
    assert [r["actor/kl_loss"] for r in rows] == [r["actor/kl_loss"] for r in reference]


@pytest.mark.lane("algorithms.off_policy")
def test_off_policy_update_clips(runs):
    rows = _rows(runs, "off_policy")
    assert all(r["actor/updates"] == 8 and r["actor/on_policy"] == 0.0 for r in rows)
    assert max(r["actor/clip_frac_low"] + r["actor/clip_frac_high"] for r in rows) > 0
    assert all("mismatch/abs_logp" in r for r in rows)  # pi_old from the trainer's own forward pass


@pytest.mark.lane("algorithms.cispo_rloo_kl_reward")
def test_cispo_rloo_kl_in_reward_dynamic_sampling_and_overlong_shaping_run(runs):
    rows = _rows(runs, "cispo_rloo_kl_reward")
    assert len(rows) == 3
    for key in (*ALGO_METRICS, "algo/kl_reward_penalty", "algo/overlong_masked", "dynamic_sampling/tries",
                "dynamic_sampling/groups_kept"):
        assert all(key in r for r in rows), key
    assert "actor/kl_loss" not in rows[-1]  # the KL went into the reward
    assert max(r["algo/kl_reward_penalty"] for r in rows[1:]) != 0.0
    assert all(r["actor/on_policy"] == 0.0 for r in rows)  # the KL in the reward needs pi_old first
