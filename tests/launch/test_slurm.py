"""slurm/: syntax and lint of every script, and train.sbatch run on this host with srun/scontrol stubs.

The stubs start one real ``torchrun`` per fake node (c10d rendezvous on localhost), and torchrun starts
``fake_train.py`` in place of the trainer, so the launch chain is the one a cluster runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megatron_grpo.launch import free_port

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCRIPTS = sorted((ROOT / "slurm").iterdir())
TORCHRUN = Path(sys.executable).with_name("torchrun")


def test_slurm_dir_has_the_scripts():
    names = {p.name for p in SCRIPTS}
    assert {"train.sbatch", "eval.sbatch", "convert.sbatch", "env.sh", "rank.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed (CI: apt-get update && apt-get install -y shellcheck)")
def test_shellcheck():
    stubs = sorted(HERE.glob("*.sh"))
    proc = subprocess.run(["shellcheck", "-x", *map(str, SCRIPTS), *map(str, stubs)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _start(tmp_path: Path, nodes: int, **env: str) -> subprocess.Popen:
    out = tmp_path / "out"
    out.mkdir()
    full = {
        **os.environ,
        "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "t", "SLURM_JOB_NODELIST": "node[0-9]",
        "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_SUBMIT_DIR": str(ROOT),
        "SRUN": str(HERE / "fake_srun.sh"), "SCONTROL": str(HERE / "fake_scontrol.sh"), "TORCHRUN": str(TORCHRUN),
        "MEGATRON_GRPO_CMD": f"{sys.executable} {HERE / 'fake_train.py'}", "GPUS_PER_NODE": "1",
        "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1",
        "FAKE_OUT": str(out), "FAKE_SCONTROL_LOG": str(tmp_path / "scontrol.log"),
        **env,
    }
    args = ["bash", str(ROOT / "slurm" / "train.sbatch"), "configs/x.yaml",
            f"trainer.run_dir={tmp_path / 'run'}", "optim.lr=2e-6"]
    return subprocess.Popen(args, cwd=ROOT, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    log, _ = proc.communicate(timeout=120)
    return proc.returncode, log


def _requeues(tmp_path: Path) -> list[str]:
    log = tmp_path / "scontrol.log"
    return log.read_text().splitlines() if log.exists() else []


def _ranks(tmp_path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "out").glob("rank*.json"))]


def test_two_nodes_start_with_forwarded_args_and_no_requeue_when_finished(tmp_path):
    rc, log = _finish(_start(tmp_path, nodes=2))
    assert rc == 0, log
    ranks = _ranks(tmp_path)
    assert len(ranks) == 2, log
    run_dir = str(tmp_path / "run")
    for r in ranks:
        assert r["argv"] == ["train", "--config", "configs/x.yaml", "--run-dir", run_dir,
                             f"trainer.run_dir={run_dir}", "optim.lr=2e-6"]
        assert r["env"]["WORLD_SIZE"] == "2" and r["env"]["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "570"
        assert r["env"]["MEGATRON_GRPO_RC_DIR"].startswith(run_dir)
    assert sorted(r["env"]["RANK"] for r in ranks) == ["0", "1"]
    assert sorted(r["env"]["SLURM_NODEID"] for r in ranks) == ["0", "1"]
    assert _requeues(tmp_path) == []


@pytest.mark.parametrize(("code", "requeued", "expected_rc"), [(75, True, 0), (3, False, None)])
def test_requeue_only_on_exit_code_75(tmp_path, code, requeued, expected_rc):
    rc, log = _finish(_start(tmp_path, nodes=2, FAKE_TRAIN_RC=str(code)))
    assert _requeues(tmp_path) == (["requeue 4242"] if requeued else []), log
    if expected_rc is None:
        assert rc != 0, log  # a crash fails the job (torchrun reports it as 1)
    else:
        assert rc == expected_rc, log


def test_time_limit_signal_stops_trainer_and_requeues(tmp_path):
    proc = _start(tmp_path, nodes=2, FAKE_TRAIN_WAIT="1")
    deadline = time.monotonic() + 90
    while len(list((tmp_path / "out").glob("rank*.json"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.1)
    proc.send_signal(signal.SIGUSR1)  # what `#SBATCH --signal=B:USR1@120` delivers to the batch shell
    rc, log = _finish(proc)
    assert rc == 0, log
    assert "got SIGUSR1" in log
    assert _requeues(tmp_path) == ["requeue 4242"], log


def test_cancelled_job_is_not_requeued(tmp_path):
    proc = _start(tmp_path, nodes=1, FAKE_TRAIN_WAIT="1")
    deadline = time.monotonic() + 90
    while not list((tmp_path / "out").glob("rank*.json")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # scancel
    rc, log = _finish(proc)
    assert "got SIGTERM" in log and rc == 75, log  # saved, not finished, not requeued
    assert _requeues(tmp_path) == [], log
