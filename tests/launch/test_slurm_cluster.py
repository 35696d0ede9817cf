"""slurm/*.sbatch under a real Slurm: two nodes (n1, n2) on this machine, brought up by ``tools/slurm_ci.sh``
(.ci/run does it). ``sbatch`` submits, ``slurmd`` starts the steps, and the signals, the requeue and the
time limit are Slurm's own. Skipped where no such cluster is up (``SLURM_CONF`` unset).

The trainer is the real one on the tiny CPU config, one process per node (``GPUS_PER_NODE=1``); a few
launch-only cases run ``fake_train.py`` in its place.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megatron_grpo.checkpoint.files import latest_checkpoint, read_trainer_state, verify_checkpoint
from megatron_grpo.checkpoint.reader import CheckpointReader
from megatron_grpo.trainer.logger import read_metrics

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STEPS = 6
RUN = [f"trainer.max_steps={STEPS}", "checkpoint.save_freq=0", "logging.progress_bar=false",
       "logging.tensorboard=false"]
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("SLURM_CONF") or shutil.which("sbatch") is None,
                       reason='no Slurm cluster up: eval "$(bash tools/slurm_ci.sh up)" (root; .ci/run does it)'),
]


def _env(**extra: str) -> dict[str, str]:
    return {
        **os.environ, "GPUS_PER_NODE": "1", "OMP_NUM_THREADS": "1",
        "TORCHRUN": str(Path(sys.executable).with_name("torchrun")),
        "MEGATRON_GRPO_CMD": f"{sys.executable} -m megatron_grpo",
        "TORCHINDUCTOR_CACHE_DIR": str(ROOT / ".cache" / "torchinductor"),
        **extra,
    }


def sbatch(tmp_path: Path, script: str, *args: str, options: tuple[str, ...] = (), **env: str) -> str:
    """Submits ``slurm/<script>`` from the repository root, as a user would; returns the job id."""
    proc = subprocess.run(["sbatch", "--parsable", f"--output={tmp_path}/%x-%j.out", *options,
                           f"slurm/{script}", *args], cwd=ROOT, env=_env(**env), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def job(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def output(tmp_path: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("*.out")))


def wait_for(tmp_path: Path, job_id: str, timeout: float = 600) -> dict[str, str]:
    """The job's record once it has ended for good (a requeued job is pending, then runs again)."""
    deadline = time.monotonic() + timeout
    while (info := job(job_id))["JobState"] not in FINAL:
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job_id])
            pytest.fail(f"job {job_id} still {info['JobState']} after {timeout} s:\n{output(tmp_path)}")
        time.sleep(1)
    return info


def wait_until(tmp_path: Path, job_id: str, condition, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        info = job(job_id)
        if info["JobState"] in FINAL or time.monotonic() > deadline:
            subprocess.run(["scancel", job_id])
            pytest.fail(f"job {job_id} is {info['JobState']} before the awaited state:\n{output(tmp_path)}")
        time.sleep(0.5)


def comparable(rows: list[dict]) -> list[tuple]:
    return [(r["step"], r["data/batch"], r["reward/mean"], r["loss"], r["actor/grad_norm"]) for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, list[dict]]:
    """An uninterrupted two-node run, the baseline the pre-empted runs must reproduce."""
    tmp_path = tmp_path_factory.mktemp("reference")
    run = tmp_path / "run"
    job_id = sbatch(tmp_path, "train.sbatch", "configs/tiny_cpu.yaml", f"trainer.run_dir={run}", *RUN,
                    options=("--nodes=2",))
    info = wait_for(tmp_path, job_id)
    assert (info["JobState"], info["Restarts"]) == ("COMPLETED", "0"), output(tmp_path)
    return run, read_metrics(run)


def test_two_node_job_trains_across_both_nodes(reference):
    run, rows = reference
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # logged once (rank 0), not once per node
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step_{STEPS}"
    (codes,) = (run / "slurm").iterdir()  # one job, one start
    assert sorted(p.name for p in codes.iterdir()) == ["rank-0", "rank-1"]
    assert all(p.read_text().strip() == "0" for p in codes.iterdir())


def test_preempted_by_scancel_then_by_the_time_limit_warning_resumes_exactly(tmp_path, reference):
    """One job pre-empted twice: by ``scancel --signal=USR1 --batch`` on its first start, then by Slurm's own
    warning (``--signal=B:USR1@120``) on the second, whose limit the test lowers to 2 minutes (sent at Slurm's
    first time-limit check, within about 30 s). Each time the trainers save within the grace period and the
    job requeues itself; the third start ends with the metrics of the uninterrupted run. The first two starts'
    trainers wait for the request (after_stop_request.sh): a tiny step takes under a second, and the run
    would otherwise be over before the request."""
    run = tmp_path / "run"
    job_id = sbatch(tmp_path, "train.sbatch", "configs/tiny_cpu.yaml", f"trainer.run_dir={run}", *RUN,
                    options=("--nodes=2", "--time=30", "--signal=B:USR1@120"), STOPPED_STARTS="2",
                    MEGATRON_GRPO_CMD=f"bash {HERE / 'after_stop_request.sh'} {sys.executable} -m megatron_grpo")
    wait_until(tmp_path, job_id, lambda: (run / "slurm").is_dir())  # the batch script's traps are set
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
    wait_until(tmp_path, job_id, lambda: job(job_id)["Restarts"] != "0")
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=2"], check=True)
    wait_until(tmp_path, job_id, lambda: job(job_id)["Restarts"] == "2")
    # The last start gets a time limit it will not meet, or it would be warned again after its first step.
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=30"], check=True)
    info = wait_for(tmp_path, job_id)
    log = output(tmp_path)
    assert (info["JobState"], info["Restarts"]) == ("COMPLETED", "2"), log
    assert log.count("got SIGUSR1, asking the trainers to save and stop") == 2, log
    assert log.count("stop requested (stop file") >= 2 and log.count(f"requeued job {job_id}") == 2, log
    starts = sorted((run / "slurm").iterdir())
    assert [(s / "rank-0").read_text().strip() for s in starts] == ["75", "75", "0"]
    assert comparable(read_metrics(run)) == comparable(reference[1])


def test_disaggregated_job_survives_preemption_and_a_cancel_keeps_its_checkpoint(tmp_path):
    """ROLLOUT_NODES=1: n1 trains, n2 runs the engine (slurm/engine.sh), one step off-policy.
    ``scancel --signal=USR1 --batch`` mid-run: checkpoint, the engine step ends with the trainer, requeue.
    The restarted job trains on, each batch of the data order once, until a user's ``scancel``: Slurm
    signals everything and srun kills the trainer at once; the job ends CANCELLED, is not requeued
    again, and its last periodic checkpoint is whole."""
    run = tmp_path / "run"
    job_id = sbatch(tmp_path, "train.sbatch", "configs/tiny_cpu.yaml", f"trainer.run_dir={run}",
                    "rollout.max_staleness=1", "trainer.max_steps=100", "checkpoint.save_freq=2", *RUN[2:],
                    options=("--nodes=2",), ROLLOUT_NODES="1", ENGINE_TP="1")
    wait_until(tmp_path, job_id, lambda: len(read_metrics(run)) >= 2)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
    wait_until(tmp_path, job_id, lambda: job(job_id)["Restarts"] == "1" and job(job_id)["JobState"] == "RUNNING")
    stopped = len(read_metrics(run))
    wait_until(tmp_path, job_id, lambda: len(read_metrics(run)) >= stopped + 3)
    subprocess.run(["scancel", job_id], check=True)
    info = wait_for(tmp_path, job_id, timeout=120)
    log = output(tmp_path)
    assert (info["JobState"], info["Restarts"]) == ("CANCELLED", "1"), log
    assert "1 rollout node(s) (n2), 1 engine(s) of TP 1 each" in log and "1 training node(s)" in log, log
    assert f"requeued job {job_id}" in log and log.count("requeued job") == 1, log
    first, _ = sorted((run / "slurm").iterdir())
    assert (first / "rank-0").read_text().strip() == "75"
    rows = read_metrics(run)
    assert [(r["step"], r["data/batch"]) for r in rows] == [(s, s - 1) for s in range(1, len(rows) + 1)]
    assert all(r["refit/checksum_ok"] == 1.0 for r in rows) and rows[-1]["rollout/staleness_max"] == 1.0
    latest = latest_checkpoint(run / "checkpoints")
    verify_checkpoint(latest)  # every file there and whole
    assert read_trainer_state(latest)["step"] > stopped  # saved by the restarted job
    reader = CheckpointReader(latest)
    assert all(reader.read(key).isfinite().all() for key in reader.model_keys())


def test_eval_and_convert_jobs_run_to_completion(tmp_path, reference):
    run, _ = reference
    evaluated, exported = tmp_path / "eval", tmp_path / "hf"
    eval_id = sbatch(tmp_path, "eval.sbatch", "configs/tiny_cpu.yaml", "--ckpt", str(run / "checkpoints"),
                     "--out", str(evaluated))
    convert_id = sbatch(tmp_path, "convert.sbatch", "mcore-to-hf", "--ckpt", str(run / "checkpoints"),
                        "--hf-config", "megatron_grpo/assets/tiny/config.json", "--out", str(exported),
                        "--no-progress")
    for job_id in (eval_id, convert_id):
        assert wait_for(tmp_path, job_id)["JobState"] == "COMPLETED", output(tmp_path)
    assert list(evaluated.glob("*.json")), sorted(evaluated.iterdir())
    assert list(exported.glob("*.safetensors")) and (exported / "config.json").exists()


# ---- launch only: fake_train.py in place of the trainer ----------------------------------------------


def test_ranks_get_the_arguments_and_one_rank_per_node(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    job_id = sbatch(tmp_path, "train.sbatch", "configs/x.yaml", f"trainer.run_dir={tmp_path / 'run'}", "optim.lr=2e-6",
                    options=("--nodes=2",), MEGATRON_GRPO_CMD=f"{sys.executable} {HERE / 'fake_train.py'}",
                    FAKE_OUT=str(out))
    assert wait_for(tmp_path, job_id)["JobState"] == "COMPLETED", output(tmp_path)
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    run_dir = str(tmp_path / "run")
    assert [r["argv"] for r in ranks] == [["train", "--config", "configs/x.yaml", "--run-dir", run_dir,
                                           f"trainer.run_dir={run_dir}", "optim.lr=2e-6"]] * 2
    # one rank on each node; which node gets rank 0 is the rendezvous's choice
    assert sorted(r["env"]["RANK"] for r in ranks) == ["0", "1"]
    assert sorted(r["env"]["SLURMD_NODENAME"] for r in ranks) == ["n1", "n2"]
    assert all(r["env"]["WORLD_SIZE"] == "2" for r in ranks)


def test_a_crash_fails_the_job_without_requeue(tmp_path):
    job_id = sbatch(tmp_path, "train.sbatch", "configs/x.yaml", f"trainer.run_dir={tmp_path / 'run'}",
                    options=("--nodes=2",), MEGATRON_GRPO_CMD=f"{sys.executable} {HERE / 'fake_train.py'}",
                    FAKE_OUT=str(tmp_path), FAKE_TRAIN_RC="3")
    info = wait_for(tmp_path, job_id)
    assert (info["JobState"], info["Restarts"]) == ("FAILED", "0"), output(tmp_path)
    assert "rank 0 with 3" in output(tmp_path)


def test_a_job_of_rollout_nodes_only_is_refused(tmp_path):
    job_id = sbatch(tmp_path, "train.sbatch", "configs/tiny_cpu.yaml", options=("--nodes=2",), ROLLOUT_NODES="2")
    assert wait_for(tmp_path, job_id)["JobState"] == "FAILED"
    assert "ROLLOUT_NODES=2 leaves none of the job's 2 node(s) to train" in output(tmp_path)
