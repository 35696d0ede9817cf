"""Running the real CLI in subprocesses: shared by the trainer tests and bench/resume.py."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psutil

from megatron_grpo.trainer.logger import read_metrics

REPO = Path(__file__).resolve().parents[2]
QUIET = ["logging.progress_bar=false", "logging.tensorboard=false"]
DETERMINISTIC = ("reward/mean", "loss", "actor/grad_norm", "response_length/mean", "actor/entropy")


def env() -> dict:
    """The runs' environment: one thread each, and wandb (``logging.wandb``) writing files only."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(REPO / ".cache" / "torchinductor"),
            "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def cmd(run_dir: Path, *overrides: str, nproc: int = 1, config: Path | None = None,
        nan_steps: str | None = None) -> list[str]:
    """The CLI command; ``nan_steps`` ("2,3") runs it through tests/trainer/faults.py, one process only."""
    args = ["train", "--run-dir", str(run_dir), *(["--config", str(config)] if config else []), *QUIET, *overrides]
    if nan_steps is not None:
        assert nproc == 1, "faults.py runs one process"
        return [sys.executable, str(Path(__file__).with_name("faults.py")), nan_steps, *args]
    if nproc == 1:
        return [sys.executable, "-m", "megatron_grpo", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-port", str(random.randint(20000, 40000)), "-m", "megatron_grpo", *args]


def train(run_dir: Path, *overrides: str, nproc: int = 1, timeout: float = 600, config: Path | None = None,
          nan_steps: str | None = None) -> subprocess.CompletedProcess:
    for _ in range(3):
        proc = subprocess.run(cmd(run_dir, *overrides, nproc=nproc, config=config, nan_steps=nan_steps),
                              env=env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)
        # a free port picked by two runs starting side by side (the lane below): start again
        if proc.returncode == 0 or "address already in use" not in proc.stderr.lower() or read_metrics(run_dir):
            return proc
    return proc


class Lane:
    """Independent tiny runs on a few threads, beside the rest of the suite (tests/trainer/conftest.py starts
    them); each run is a subprocess on one thread (the disaggregated ones: two)."""

    def __init__(self, root: Path, workers: int = 2):
        self.root = root
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lane")
        self._futures: dict[str, Future] = {}

    def submit(self, runs: dict[str, Callable[[Path], object]]) -> None:
        for name, fn in runs.items():
            if name in self._futures:
                raise ValueError(f"two lane runs are named {name!r}")
            self._futures[name] = self._pool.submit(fn, self.root / name)

    def result(self, name: str):
        """What the run's function returned (its exception, raised here)."""
        return self._futures[name].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if len(read_metrics(run_dir)) >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"run did not reach step {step} (exit code {proc.poll()})")


def stop_with_sigterm(run_dir: Path, overrides: list[str], at_step: int = 2) -> tuple[int, str]:
    """Start the run, SIGTERM it once it logged ``at_step``; its exit code and stderr."""
    proc = subprocess.Popen(cmd(run_dir, *overrides), env=env(), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    wait_for_step(run_dir, at_step, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def kill_and_resume(run_dir: Path, overrides: list[str], kills: int, last_step: int, seed: int = 0) -> int:
    """SIGKILL the run ``kills`` times at random moments (rollout, update, refit, or inside a checkpoint
    save), restarting it each time, then let it finish. Returns the number of kills made. Each kill must take
    every process the run started with it (an orphan fails the run)."""
    rng, made = random.Random(seed), 0
    for _ in range(kills):
        done = len(read_metrics(run_dir))
        if done >= last_step - 1:
            break
        proc = subprocess.Popen(cmd(run_dir, *overrides), env=env(), cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_for_step(run_dir, rng.randint(done + 1, min(done + 2, last_step - 1)), proc)
        time.sleep(rng.uniform(0.0, 0.4))
        family = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        made += 1
        _no_orphans(family)
    proc = train(run_dir, *overrides)
    if proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return made


def _no_orphans(family: list[psutil.Process], grace: float = 15.0) -> None:
    """The killed run's processes are all gone within ``grace`` seconds; survivors are killed, then named."""
    _, alive = psutil.wait_procs(family, timeout=grace)
    names = []
    for child in alive:
        try:
            names.append(f"pid {child.pid}: {' '.join(child.cmdline())[:200]}")
            child.kill()
        except psutil.NoSuchProcess:
            pass
    if names:
        raise AssertionError("processes outlived the SIGKILLed trainer:\n  " + "\n  ".join(names))


def mismatches(run_dir: Path, reference: list[dict]) -> list[str]:
    """Per-step differences of the deterministic metrics (empty when the runs agree exactly)."""
    got = read_metrics(run_dir)
    if [r["step"] for r in got] != [r["step"] for r in reference]:
        return [f"steps {[r['step'] for r in got]} != {[r['step'] for r in reference]}"]
    return [f"step {a['step']} {k}: {a[k]} != {b[k]}" for a, b in zip(got, reference, strict=True)
            for k in DETERMINISTIC if a[k] != b[k]]


def learning(rows: list[dict], floor: float = 0.2) -> tuple[float, float, bool]:
    """The tiny task's learning criterion: the last 10 steps' mean reward is >= ``floor`` and at least
    twice the first 10 steps'. Returns (first, last, learned)."""
    rewards = [r["reward/mean"] for r in rows]
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    return first, last, last >= floor and last >= 2 * first
