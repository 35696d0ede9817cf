"""The trainer end to end on the embedded tiny default, through the real CLI in subprocesses:
learning, exact resume after kill -9, SIGTERM save-and-exit, DP2/TP2 = 1 process, NaN handling."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megatron_grpo.trainer.logger import read_metrics
from megatron_grpo.trainer.signals import EXIT_REQUEUE

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
QUIET = ["logging.progress_bar=false", "logging.tensorboard=false"]


def _env(extra: dict | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(REPO / ".cache" / "torchinductor")}
    return {**env, **(extra or {})}


def _cmd(run_dir: Path, *overrides: str, nproc: int = 1) -> list[str]:
    args = ["train", "--run-dir", str(run_dir), *QUIET, *overrides]
    if nproc == 1:
        return [sys.executable, "-m", "megatron_grpo", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-port", str(random.randint(20000, 40000)), "-m", "megatron_grpo", *args]


def _train(run_dir: Path, *overrides: str, nproc: int = 1, env: dict | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(run_dir, *overrides, nproc=nproc), env=_env(env), capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def _series(run_dir: Path, key: str) -> list[float]:
    return [row[key] for row in read_metrics(run_dir)]


def test_tiny_default_learns(tmp_path):
    """A shorter version of the README run (bench/learn.py runs the full 300 steps): a clear rise."""
    proc = _train(tmp_path, "trainer.max_steps=80", "checkpoint.save_freq=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rewards = _series(tmp_path, "reward/mean")
    assert len(rewards) == 80
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    assert last >= 0.2 and last >= 2 * first, (first, last)
    row = read_metrics(tmp_path)[-1]
    for key in ("loss", "response_length/mean", "time/step", "time/rollout", "time/update", "time/refit",
                "perf/tokens_per_s", "actor/entropy", "rollout/logprob_abs_diff"):
        assert key in row, key
    assert row["rollout/logprob_abs_diff"] < 1e-4  # the refit really put the trained weights in the engine
    assert (tmp_path / "config.yaml").is_file() and json.loads((tmp_path / "versions.json").read_text())["torch"]


DETERMINISTIC = ("reward/mean", "loss", "actor/grad_norm", "response_length/mean", "actor/entropy")


def _same_metrics(run_dir: Path, reference: list[dict]) -> None:
    got = read_metrics(run_dir)
    assert [r["step"] for r in got] == [r["step"] for r in reference]
    for a, b in zip(got, reference, strict=True):
        for key in DETERMINISTIC:
            assert a[key] == b[key], (a["step"], key, a[key], b[key])


def test_kill9_at_random_points_then_resume_is_exact(tmp_path):
    steps = ["trainer.max_steps=12", "checkpoint.save_freq=2", "checkpoint.keep_last=2"]
    reference_dir = tmp_path / "reference"
    proc = _train(reference_dir, *steps)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = read_metrics(reference_dir)
    run_dir, rng = tmp_path / "killed", random.Random(0)
    for _ in range(5):  # kill -9 at random moments (rollout, update, refit or inside a checkpoint save)
        done = len(read_metrics(run_dir))
        if done >= 11:
            break
        proc = subprocess.Popen(_cmd(run_dir, *steps), env=_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        target = rng.randint(done + 1, min(done + 3, 11))
        _wait_for_step(run_dir, target, proc)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = _train(run_dir, *steps)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _same_metrics(run_dir, reference)


def _wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if len(read_metrics(run_dir)) >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"run did not reach step {step} (exit code {proc.poll()})")


def test_sigterm_saves_checkpoint_and_exits_for_requeue(tmp_path):
    proc = subprocess.Popen(_cmd(tmp_path, "trainer.max_steps=200", "checkpoint.save_freq=0"), env=_env(),
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_step(tmp_path, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_REQUEUE, err[-3000:]
    last = read_metrics(tmp_path)[-1]["step"]
    assert last < 200
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == f"step_{last}"


@pytest.mark.parametrize("layout", ["parallel.tensor=1", "parallel.tensor=2"], ids=["dp2", "tp2"])
def test_two_processes_match_one(tmp_path, layout):
    single, double = tmp_path / "one", tmp_path / "two"
    base = ["trainer.max_steps=3", "checkpoint.save_freq=0"]
    for run_dir, nproc in ((single, 1), (double, 2)):
        proc = _train(run_dir, *base, layout if nproc == 2 else "parallel.tensor=1", nproc=nproc)
        assert proc.returncode == 0, proc.stderr[-3000:]
    for a, b in zip(read_metrics(single), read_metrics(double), strict=True):
        assert a["reward/mean"] == b["reward/mean"]
        for key in ("actor/grad_norm", "actor/entropy"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key


def test_nan_steps_are_skipped_then_abort(tmp_path):
    proc = _train(tmp_path / "skip", "trainer.max_steps=3", "checkpoint.save_freq=0",
                  env={"MEGATRON_GRPO_INJECT_NAN_STEPS": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _series(tmp_path / "skip", "actor/nonfinite_skipped") == [0.0, 1.0, 0.0]
    proc = _train(tmp_path / "abort", "trainer.max_steps=6", "checkpoint.save_freq=0",
                  "trainer.max_consecutive_nonfinite=2", env={"MEGATRON_GRPO_INJECT_NAN_STEPS": "2,3"})
    assert proc.returncode != 0
    assert "2 consecutive steps with NaN/Inf" in proc.stderr


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lrr=1e-3", "unknown key 'optim.lrr' (did you mean 'lr'?)"),
    ("data.train_files=[/nonexistent/train.parquet]", "/nonexistent/train.parquet"),
    (f"model.tokenizer={REPO.parent / 'shared/data/tokenizer/qwen3'}", "tokens but the model's vocab_size is 16"),
])
def test_bad_config_fails_before_heavy_work(tmp_path, override, message):
    proc = _train(tmp_path, override, timeout=300)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "engine_model").exists()  # neither engine nor policy was built


def test_validation_during_training_and_eval_command(tmp_path):
    proc = _train(tmp_path, "trainer.max_steps=2", "trainer.test_freq=2", "checkpoint.save_freq=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = read_metrics(tmp_path)[-1]
    assert 0.0 <= row["eval/tiny_arith/mean@8"] <= 1.0
    assert (tmp_path / "eval" / "step_000002.md").is_file()
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "megatron_grpo", "eval", "--ckpt", str(tmp_path / "checkpoints"),
                           "--out", str(out), f"trainer.run_dir={tmp_path / 'eval_run'}", *QUIET],
                          env=_env(), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the checkpoint's weights, evaluated through the refit, give the same mean@8 as in training
    report = json.loads((out / "eval.json").read_text())["metrics"]
    assert report["per_set"]["tiny_arith"]["mean@8"] == row["eval/tiny_arith/mean@8"]
