"""The trainer end to end on the embedded tiny default, through the real CLI in subprocesses:
learning, exact resume after kill -9, SIGTERM save-and-exit, two ranks = 1 process (policy DP2/TP2, one
TP-2 engine in or beside them), NaN handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_grpo.trainer.logger import read_metrics
from megatron_grpo.trainer.signals import EXIT_REQUEUE
from tests.trainer.harness import (
    QUIET,
    REPO,
    env,
    kill_and_resume,
    learning,
    mismatches,
    stop_with_sigterm,
    train,
)

pytestmark = pytest.mark.slow


def _series(run_dir: Path, key: str) -> list[float]:
    return [row[key] for row in read_metrics(run_dir)]


def test_tiny_default_learns(tmp_path):
    """A shorter version of the README run (bench/learn.py runs the full 300 steps): a clear rise."""
    proc = train(tmp_path, "trainer.max_steps=80", "checkpoint.save_freq=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(tmp_path)
    first, last, learned = learning(rows)
    assert len(rows) == 80 and learned, (first, last)
    row = read_metrics(tmp_path)[-1]
    for key in ("loss", "response_length/mean", "time/step", "time/rollout", "time/update", "time/refit",
                "perf/tokens_per_s", "actor/entropy", "rollout/logprob_abs_diff", "refit/checksum_ok"):
        assert key in row, key
    assert row["rollout/logprob_abs_diff"] < 1e-4  # the refit really put the trained weights in the engine
    assert all(r["refit/checksum_ok"] == 1.0 for r in read_metrics(tmp_path))
    assert (tmp_path / "config.yaml").is_file() and json.loads((tmp_path / "versions.json").read_text())["torch"]


def test_kill9_at_random_points_then_resume_is_exact(tmp_path):
    """Two random kill points per run (bench/resume.py sweeps many more, outside the suite's budget)."""
    overrides = ["trainer.max_steps=6", "checkpoint.save_freq=2", "checkpoint.keep_last=2"]
    proc = train(tmp_path / "reference", *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert kill_and_resume(tmp_path / "killed", overrides, kills=2, last_step=6) == 2
    assert mismatches(tmp_path / "killed", read_metrics(tmp_path / "reference")) == []


def test_metrics_of_a_run_killed_before_its_first_checkpoint_are_replaced(tmp_path):
    """Killed before any checkpoint: the restart begins at step 0 and must not keep the dead run's lines
    (including one cut short mid-write)."""
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward/mean": -1.0}) + '\n{"step": 2, "rew')
    proc = train(tmp_path, "trainer.max_steps=2", "checkpoint.save_freq=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["reward/mean"] >= 0.0


def test_sigterm_saves_checkpoint_and_exits_for_requeue(tmp_path):
    code, err = stop_with_sigterm(tmp_path, ["trainer.max_steps=200", "checkpoint.save_freq=0"])
    assert code == EXIT_REQUEUE, err[-3000:]
    last = read_metrics(tmp_path)[-1]["step"]
    assert last < 200
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == f"step_{last}"


TWO_VS_ONE = ["trainer.max_steps=3", "checkpoint.save_freq=0", "trainer.test_freq=3"]
LAYOUTS = {  # two ranks: the policy's layout, and where their engines run
    "tp2": ["parallel.tensor=2"],  # two TP-1 engines
    "engine_tp2": ["rollout.tensor_parallel=2"],  # a DP-2 policy; the two ranks are one TP-2 engine's workers
    "engine_tp2_process": ["rollout.tensor_parallel=2", "rollout.placement=colocated_process"],  # lent buckets
}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> list[dict]:
    run_dir = tmp_path_factory.mktemp("one")
    proc = train(run_dir, *TWO_VS_ONE, "parallel.tensor=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_metrics(run_dir)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_two_processes_match_one(tmp_path, one_process, layout):
    """Prompt i of a step is seeded as prompt i on whichever engine it lands, so every layout draws the
    one-process run's samples: the same rewards, and the same update up to rounding."""
    proc = train(tmp_path, *TWO_VS_ONE, *LAYOUTS[layout], nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = read_metrics(tmp_path)
    for a, b in zip(one_process, two, strict=True):
        assert a["reward/mean"] == b["reward/mean"]
        for key in ("actor/grad_norm", "actor/entropy"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
        assert b["rollout/logprob_abs_diff"] < 1e-4  # the refit probe, on every engine
        # a TP worker holds shards: no read-back, the probe checks it
        assert ("refit/checksum_ok" in b) == (layout == "tp2")
    # validation split over the engines draws the samples one engine draws
    evals = [{k: v for k, v in rows[-1].items() if k.startswith("eval/")} for rows in (one_process, two)]
    assert evals[0] and evals[1] == evals[0]


def test_nan_steps_are_skipped_then_abort(tmp_path):
    proc = train(tmp_path / "skip", "trainer.max_steps=3", "checkpoint.save_freq=0", nan_steps="2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _series(tmp_path / "skip", "actor/nonfinite_skipped") == [0.0, 1.0, 0.0]
    proc = train(tmp_path / "abort", "trainer.max_steps=6", "checkpoint.save_freq=0",
                  "trainer.max_consecutive_nonfinite=2", nan_steps="2,3")
    assert proc.returncode != 0
    assert "2 consecutive steps with NaN/Inf" in proc.stderr


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lrr=1e-3", "unknown key 'optim.lrr' (did you mean 'lr'?)"),
    ("data.train_files=[/nonexistent/train.parquet]", "/nonexistent/train.parquet"),
    (f"model.tokenizer={REPO.parent / 'shared/data/tokenizer/qwen3'}", "tokens but the model's vocab_size is 16"),
])
def test_bad_config_fails_before_heavy_work(tmp_path, override, message):
    proc = train(tmp_path, override, timeout=300)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "engine_model").exists()  # neither engine nor policy was built


def test_validation_during_training_and_eval_command(tmp_path):
    proc = train(tmp_path, "trainer.max_steps=2", "trainer.test_freq=2", "checkpoint.save_freq=2",
                 "trainer.val_before_train=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert set(rows[0]) == {"step", *(k for k in rows[-1] if k.startswith("eval/"))}  # the initial weights
    assert (tmp_path / "eval" / "step_000000.md").is_file()
    row = rows[-1]
    assert 0.0 <= row["eval/tiny_arith/mean@8"] <= 1.0
    assert row["eval/tiny_arith/maj@8"] > 0.0  # bare-digit answers vote through the reward's fallback
    assert (tmp_path / "eval" / "step_000002.md").is_file()
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "megatron_grpo", "eval", "--ckpt", str(tmp_path / "checkpoints"),
                           "--out", str(out), f"trainer.run_dir={tmp_path / 'eval_run'}", *QUIET],
                          env=env(), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the checkpoint's weights, evaluated through the refit, give the same mean@8 as in training
    report = json.loads((out / "eval.json").read_text())["metrics"]
    assert report["per_set"]["tiny_arith"]["mean@8"] == row["eval/tiny_arith/mean@8"]
