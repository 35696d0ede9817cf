"""The trainer with a mixture-of-experts policy (configs/tiny_moe_cpu.yaml): the tiny Qwen3-MoE learns the
embedded task, and two processes with the experts split over them (EP2), replaying the engines' routing,
train exactly as one."""

from __future__ import annotations

import pytest

from megatron_grpo.trainer.logger import read_metrics
from tests.trainer.harness import REPO, learning, train

MOE = REPO / "configs" / "tiny_moe_cpu.yaml"


# in the trainer tests' lane (harness.Lane), beside the other single-process runs
LANE = {"moe.learn": lambda d: train(d, "trainer.max_steps=80", "checkpoint.save_freq=0", "trainer.test_freq=0",
                                     config=MOE)}


@pytest.mark.lane("moe.learn")
def test_tiny_moe_learns(lane):
    proc = lane.result("moe.learn")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(lane.root / "moe.learn")
    first, last, learned = learning(rows, floor=0.12)
    assert len(rows) == 80 and learned, (first, last)
    assert all(row["refit/checksum_ok"] == 1.0 for row in rows)
    assert 0.9 <= rows[-1]["moe/load_balancing_loss"] < 2.0  # 1.0 when every expert gets its share
    assert 0.0 < rows[-1]["moe/expert_load_min"] <= 1.0 <= rows[-1]["moe/expert_load_max"]  # no expert left idle
    assert rows[-1]["rollout/logprob_abs_diff"] < 1e-4  # the engine's re-packed experts are the trained ones


@pytest.mark.slow
def test_expert_parallel_run_matches_one_process(tmp_path):
    # without the load-balancing loss: it is a per-micro-batch statistic, and 1 and 2 ranks pack
    # micro-batches differently (tests/model/test_moe_aux_loss.py checks it at fixed micro-batches).
    # The EP2 run replays the engines' routing: in fp32 the engines route as the trainer does
    # (tests/refit/test_moe_refit.py), so replay must change nothing, on the rollouts' whole path.
    base = ["trainer.max_steps=3", "checkpoint.save_freq=0", "trainer.test_freq=0", "model.moe_aux_loss_coef=0"]
    one = train(tmp_path / "one", *base, config=MOE)
    two = train(tmp_path / "two", *base, "parallel.expert=2", "algo.routing_replay=true", nproc=2, config=MOE)
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-2000:], two.stderr[-2000:])
    for a, b in zip(read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two"), strict=True):
        assert a["reward/mean"] == b["reward/mean"]
        for key in ("actor/grad_norm", "actor/entropy", "loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
