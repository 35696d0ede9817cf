"""slurm/: syntax and lint of every script. test_slurm_cluster.py runs them under a real Slurm."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCRIPTS = sorted((ROOT / "slurm").iterdir())


def test_slurm_dir_has_the_scripts():
    names = {p.name for p in SCRIPTS}
    assert {"train.sbatch", "eval.sbatch", "convert.sbatch", "env.sh", "rank.sh", "engine.sh"} <= names


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
