"""The trainer end to end on the embedded tiny default, through the real CLI in subprocesses:
learning, exact resume after kill -9, SIGTERM save-and-exit, two ranks = 1 process (policy DP2/TP2, one
TP-2 engine in or beside them), NaN handling, a user's reward function by path.

The single-process runs are in the trainer tests' lane (harness.Lane): they start together, and each test
waits for its own."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_grpo.checkpoint.files import latest_checkpoint, read_trainer_state, verify_checkpoint
from megatron_grpo.trainer.logger import read_metrics, read_samples
from megatron_grpo.trainer.signals import EXIT_REQUEUE
from tests.shared_data import DATA as MIRROR
from tests.shared_data import needs_shared
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

KILL9 = ["trainer.max_steps=6", "checkpoint.save_freq=2", "checkpoint.keep_last=2"]
ASYNC = ["checkpoint.async_save=true", "checkpoint.save_freq=1"]   # a save in flight at nearly every moment
TWO_VS_ONE = ["trainer.max_steps=3", "checkpoint.save_freq=0", "trainer.test_freq=3"]
BAD_CONFIGS = [
    ("optim.lrr=1e-3", "unknown key 'optim.lrr' (did you mean 'lr'?)"),
    ("data.train_files=[/nonexistent/train.parquet]", "/nonexistent/train.parquet"),
    (f"model.tokenizer={MIRROR / 'tokenizer' / 'qwen3'}", "tokens but the model's vocab_size is 16"),
]
USER_REWARD = """
def score(data_source, solution_str, ground_truth, extra_info=None):
    correct = solution_str.strip().startswith(ground_truth)
    return {"score": float(correct), "answered": float(solution_str.strip()[:1].isdigit())}
"""


def _kill9(run_dir: Path) -> tuple[subprocess.CompletedProcess, int]:
    reference = train(run_dir / "reference", *KILL9)
    return reference, kill_and_resume(run_dir / "killed", KILL9, kills=2, last_step=6)


def _killed_before_first_checkpoint(run_dir: Path) -> subprocess.CompletedProcess:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward/mean": -1.0}) + '\n{"step": 2, "rew')
    return train(run_dir, "trainer.max_steps=2", "checkpoint.save_freq=0")


def _validation_then_eval(run_dir: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    proc = train(run_dir, "trainer.max_steps=2", "trainer.test_freq=2", "checkpoint.save_freq=2",
                 "trainer.val_before_train=true")
    evaluated = subprocess.run([sys.executable, "-m", "megatron_grpo", "eval", "--ckpt", str(run_dir / "checkpoints"),
                                "--out", str(run_dir / "report"), f"trainer.run_dir={run_dir / 'eval_run'}", *QUIET],
                               env=env(), capture_output=True, text=True, timeout=600, cwd=REPO)
    return proc, evaluated


def _user_reward(run_dir: Path) -> subprocess.CompletedProcess:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "my_reward.py").write_text(USER_REWARD)
    return train(run_dir, "trainer.max_steps=2", "checkpoint.save_freq=0", "trainer.test_freq=2",
                 f"reward.function={run_dir / 'my_reward.py'}:score")


LANE = {
    "e2e.learn": lambda d: train(d, "trainer.max_steps=80", "checkpoint.save_freq=0"),
    "e2e.kill9": _kill9,
    "e2e.killed_before_first_checkpoint": _killed_before_first_checkpoint,
    "e2e.sigterm": lambda d: stop_with_sigterm(d, ["trainer.max_steps=200", "checkpoint.save_freq=0"]),
    "e2e.kill9_async": lambda d: kill_and_resume(d, [*KILL9, *ASYNC], kills=2, last_step=6, seed=5),
    "e2e.sigterm_async": lambda d: stop_with_sigterm(d, ["trainer.max_steps=200", *ASYNC, "trainer.test_freq=0",
                                                         "trainer.val_before_train=true"]),
    "e2e.one_process": lambda d: train(d, *TWO_VS_ONE, "parallel.tensor=1"),
    "e2e.nan_skip": lambda d: train(d, "trainer.max_steps=3", "checkpoint.save_freq=0", nan_steps="2"),
    "e2e.nan_abort": lambda d: train(d, "trainer.max_steps=6", "checkpoint.save_freq=0",
                                     "trainer.max_consecutive_nonfinite=2", nan_steps="2,3"),
    **{f"e2e.bad_config.{i}": functools.partial(lambda o, d: train(d, o, timeout=300), override)
       for i, (override, _) in enumerate(BAD_CONFIGS)},
    "e2e.validation": _validation_then_eval,
    "e2e.user_reward": _user_reward,
}


def _series(run_dir: Path, key: str) -> list[float]:
    return [row[key] for row in read_metrics(run_dir)]


@pytest.mark.lane("e2e.learn")
def test_tiny_default_learns(lane):
    """A shorter version of the README run (bench/learn.py runs the full 300 steps): a clear rise."""
    proc, tmp_path = lane.result("e2e.learn"), lane.root / "e2e.learn"
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
    # samples.jsonl: every 10 steps (logging.samples_every), the first response to 4 prompts; and the
    # validation's own at step 50 (trainer.test_freq)
    samples = [r for r in read_samples(tmp_path) if r["kind"] == "train"]
    assert [r["step"] for r in samples] == [s for s in range(10, 81, 10) for _ in range(4)]
    assert all(r["length"] == 1 and r["reward"] in (0.0, 1.0) for r in samples)
    assert [r["step"] for r in read_samples(tmp_path) if r["kind"] == "val/tiny_arith"] == [50] * 4
    last = samples[-4:]   # the tiny task answers with one digit, which the reward's fallback extracts
    assert [r["reward"] == 1.0 for r in last] == [r["answer"] == r["ground_truth"] for r in last]


@pytest.mark.lane("e2e.kill9")
def test_kill9_at_random_points_then_resume_is_exact(lane):
    """Two random kill points per run (bench/resume.py sweeps many more, outside the suite's budget)."""
    proc, kills = lane.result("e2e.kill9")
    tmp_path = lane.root / "e2e.kill9"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert kills == 2
    assert mismatches(tmp_path / "killed", read_metrics(tmp_path / "reference")) == []


@pytest.mark.lane("e2e.kill9", "e2e.kill9_async")
def test_kill9_with_async_saves_then_resume_is_exact(lane):
    """A save every step, written while the next step runs: kills land during writes, and the resumed run still
    matches the uninterrupted one (whose checkpoints were synchronous: the schedule changes no number)."""
    assert lane.result("e2e.kill9_async") == 2
    reference = read_metrics(lane.root / "e2e.kill9" / "reference")
    assert mismatches(lane.root / "e2e.kill9_async", reference) == []


@pytest.mark.lane("e2e.sigterm_async")
def test_sigterm_waits_for_the_async_write_then_saves_and_exits_for_requeue(lane):
    code, err = lane.result("e2e.sigterm_async")
    root = lane.root / "e2e.sigterm_async" / "checkpoints"
    assert code == EXIT_REQUEUE, err[-3000:]
    rows = read_metrics(lane.root / "e2e.sigterm_async")
    assert rows[0]["step"] == 0 and "eval/tiny_arith/mean@8" in rows[0]  # val_before_train without test_freq
    last = rows[-1]["step"]
    latest = latest_checkpoint(root)
    assert latest.name == f"step_{last}" and read_trainer_state(latest)["step"] == last
    verify_checkpoint(latest)  # every file whole: the write finished before the exit
    assert not list(root.glob("tmp-*"))          # and no write was left behind


@pytest.mark.lane("e2e.killed_before_first_checkpoint")
def test_metrics_of_a_run_killed_before_its_first_checkpoint_are_replaced(lane):
    """Killed before any checkpoint: the restart begins at step 0 and must not keep the dead run's lines
    (including one cut short mid-write)."""
    proc = lane.result("e2e.killed_before_first_checkpoint")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(lane.root / "e2e.killed_before_first_checkpoint")
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["reward/mean"] >= 0.0


@pytest.mark.lane("e2e.sigterm")
def test_sigterm_saves_checkpoint_and_exits_for_requeue(lane):
    code, err = lane.result("e2e.sigterm")
    tmp_path = lane.root / "e2e.sigterm"
    assert code == EXIT_REQUEUE, err[-3000:]
    last = read_metrics(tmp_path)[-1]["step"]
    assert last < 200
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == f"step_{last}"


LAYOUTS = {  # two ranks: the policy's layout, and where their engines run
    "tp2": ["parallel.tensor=2"],  # two TP-1 engines
    "engine_tp2": ["rollout.tensor_parallel=2"],  # a DP-2 policy; the two ranks are one TP-2 engine's workers
    "engine_tp2_process": ["rollout.tensor_parallel=2", "rollout.placement=colocated_process"],  # lent buckets
}


@pytest.fixture
def one_process(lane) -> list[dict]:
    proc = lane.result("e2e.one_process")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_metrics(lane.root / "e2e.one_process")


@pytest.mark.lane("e2e.one_process")
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


@pytest.mark.lane("e2e.nan_skip", "e2e.nan_abort")
def test_nan_steps_are_skipped_then_abort(lane):
    proc = lane.result("e2e.nan_skip")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _series(lane.root / "e2e.nan_skip", "actor/nonfinite_skipped") == [0.0, 1.0, 0.0]
    proc = lane.result("e2e.nan_abort")
    assert proc.returncode != 0
    assert "2 consecutive steps with NaN/Inf" in proc.stderr


@pytest.mark.parametrize("case", [
    pytest.param(i, id=override, marks=[pytest.mark.lane(f"e2e.bad_config.{i}"),
                                        *([needs_shared] if str(MIRROR) in override else [])])
    for i, (override, _) in enumerate(BAD_CONFIGS)])
def test_bad_config_fails_before_heavy_work(lane, case):
    proc = lane.result(f"e2e.bad_config.{case}")
    assert proc.returncode != 0
    assert BAD_CONFIGS[case][1] in proc.stderr
    assert not (lane.root / f"e2e.bad_config.{case}" / "engine_model").exists()  # no engine or policy was built


@pytest.mark.lane("e2e.validation")
def test_validation_during_training_and_eval_command(lane):
    proc, evaluated = lane.result("e2e.validation")
    tmp_path = lane.root / "e2e.validation"
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert set(rows[0]) == {"step", *(k for k in rows[-1] if k.startswith("eval/"))}  # the initial weights
    assert (tmp_path / "eval" / "step_000000.md").is_file()
    row = rows[-1]
    assert 0.0 <= row["eval/tiny_arith/mean@8"] <= 1.0
    assert row["eval/tiny_arith/maj@8"] > 0.0  # bare-digit answers vote through the reward's fallback
    assert (tmp_path / "eval" / "step_000002.md").is_file()
    val = [(r["step"], r["kind"]) for r in read_samples(tmp_path) if r["kind"] != "train"]
    assert val == [(0, "val/tiny_arith")] * 4 + [(2, "val/tiny_arith")] * 4
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    # the checkpoint's weights, evaluated through the refit, give the same mean@8 as in training
    report = json.loads((tmp_path / "report" / "eval.json").read_text())["metrics"]
    assert report["per_set"]["tiny_arith"]["mean@8"] == row["eval/tiny_arith/mean@8"]


@pytest.mark.lane("e2e.user_reward")
def test_a_user_reward_function_trains_and_its_extra_keys_are_logged(lane):
    """reward.function by path: training is graded by it, validation still by the math checker."""
    proc = lane.result("e2e.user_reward")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(lane.root / "e2e.user_reward")
    assert len(rows) == 2 and all(0.0 <= r["reward/extra/answered"] <= 1.0 for r in rows)
    assert rows[-1]["reward/errors"] == 0.0 and "eval/tiny_arith/mean@8" in rows[-1]
