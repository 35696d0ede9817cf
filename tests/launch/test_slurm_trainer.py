"""slurm/train.sbatch driving the REAL trainer as a 2-node x 1-task job on this host (srun/scontrol
stubs, torchrun --nnodes=2 with a localhost rendezvous, gloo, the tiny config), including pre-emption:
USR1 -> checkpoint -> requeue -> the rerun resumes and ends with the uninterrupted run's metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megatron_grpo.trainer.logger import read_metrics

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
STUBS = Path(__file__).resolve().parent
STEPS = ["trainer.max_steps=5", "checkpoint.save_freq=0", "logging.progress_bar=false", "logging.tensorboard=false"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sbatch(tmp_path: Path, run_dir: Path, *overrides: str, **extra: str) -> subprocess.Popen:
    env = {
        **os.environ, "SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "grpo", "SLURM_JOB_NODELIST": "node[0-1]",
        "SLURM_JOB_NUM_NODES": "2", "SLURM_SUBMIT_DIR": str(ROOT), "GPUS_PER_NODE": "1",
        "SRUN": str(STUBS / "fake_srun.sh"), "SCONTROL": str(STUBS / "fake_scontrol.sh"),
        "TORCHRUN": str(Path(sys.executable).with_name("torchrun")),
        "MEGATRON_GRPO_CMD": f"{sys.executable} -m megatron_grpo",
        "MASTER_PORT": str(_port()), "OMP_NUM_THREADS": "1", "FAKE_SCONTROL_LOG": str(tmp_path / "scontrol.log"),
        "TORCHINDUCTOR_CACHE_DIR": str(ROOT / ".cache" / "torchinductor"), "ENGINE_PORT": str(_port()),
        **extra,
    }
    args = ["bash", str(ROOT / "slurm" / "train.sbatch"), str(ROOT / "configs" / "tiny_cpu.yaml"),
            f"trainer.run_dir={run_dir}", *STEPS, *overrides]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _requeues(tmp_path: Path) -> list[str]:
    log = tmp_path / "scontrol.log"
    return log.read_text().splitlines() if log.exists() else []


def test_two_node_job_trains_then_preemption_requeues_and_resumes_exactly(tmp_path):
    reference = tmp_path / "reference"
    proc = _sbatch(tmp_path, reference)
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log
    rows = read_metrics(reference)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]  # written once (rank 0), not once per node
    assert (reference / "checkpoints" / "latest").read_text().strip() == "step_5"
    assert _requeues(tmp_path) == []

    preempted = tmp_path / "preempted"
    proc = _sbatch(tmp_path, preempted)
    deadline = time.monotonic() + 600
    while len(read_metrics(preempted)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.1)
    proc.send_signal(signal.SIGUSR1)  # Slurm's --signal=B:USR1@... to the batch shell
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0 and _requeues(tmp_path) == ["requeue 77"], log
    stopped_at = read_metrics(preempted)[-1]["step"]
    assert stopped_at < 5 and (preempted / "checkpoints" / "latest").read_text().strip() == f"step_{stopped_at}"

    proc = _sbatch(tmp_path, preempted)  # the requeued job: same command, resumes from `latest`
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log
    for a, b in zip(read_metrics(preempted), rows, strict=True):
        assert (a["step"], a["reward/mean"], a["loss"], a["actor/grad_norm"]) == (
            b["step"], b["reward/mean"], b["loss"], b["actor/grad_norm"])


def test_disaggregated_job_trains_on_one_node_generates_on_the_other_and_survives_preemption(tmp_path):
    """ROLLOUT_NODES=1: node 0 trains, node 1 runs the engine (slurm/engine.sh), one step off-policy.
    USR1 mid-run: checkpoint, the engine step ends with the trainer, requeue; the rerun finishes and every
    step trains its own batch of the data order exactly once."""
    run = tmp_path / "run"
    proc = _sbatch(tmp_path, run, "rollout.max_staleness=1", ROLLOUT_NODES="1", ENGINE_TP="1")
    deadline = time.monotonic() + 600
    while len(read_metrics(run)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.1)
    proc.send_signal(signal.SIGUSR1)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0 and _requeues(tmp_path) == ["requeue 77"], log
    assert "1 rollout node(s) (localhost), 1 engine(s) of TP 1 each" in log and "1 training node(s)" in log, log
    assert "engine step exited" not in log, log  # the engine left cleanly when the trainer closed it
    proc = _sbatch(tmp_path, run, "rollout.max_staleness=1", ROLLOUT_NODES="1", ENGINE_TP="1")
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log
    rows = read_metrics(run)
    assert [(r["step"], r["data/batch"]) for r in rows] == [(s, s - 1) for s in range(1, 6)]
    assert all(r["refit/checksum_ok"] == 1.0 for r in rows) and rows[-1]["rollout/staleness_max"] == 1.0


def test_a_job_of_rollout_nodes_only_is_refused(tmp_path):
    proc = _sbatch(tmp_path, tmp_path / "run", ROLLOUT_NODES="2")
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "ROLLOUT_NODES=2 leaves none of the job's 2 node(s) to train" in log
