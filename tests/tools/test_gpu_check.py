"""tools/gpu_check.py --dry-run: the GPU check's code on CPU at tiny shapes, so it cannot rot between
the sessions that have a GPU (docs/gpu.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dry_run_runs_every_part():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check.py"), "--dry-run", "--steps", "1"],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the check's JSON lines; libraries may print to stdout as well
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"check"')]
    assert all("error" not in line for line in lines), [line for line in lines if "error" in line]
    by_check = {}
    for line in lines:
        by_check.setdefault(line["check"], []).append(line)
    assert by_check["environment"][0]["dry_run"] is True
    policies = {(p["impl"], p.get("dtype")): p for p in by_check["policy"]}
    assert "skipped" in policies[("transformer_engine", None)]  # says so rather than silently dropping it
    fp32, bf16 = policies[("local", "fp32")], policies[("local", "bf16")]
    assert fp32["logprob_max_abs_diff_vs_transformers"] < 1e-5 < bf16["logprob_max_abs_diff_vs_transformers"] < 0.05
    assert fp32["applied"] and fp32["max_weight_change"] > 0 and fp32["grad_norm"] > 0
    assert [(t["tokens"], t["sequences"]) for t in by_check["throughput"]] == [(64, 1), (256, 4)] * 2
    assert all(t["tokens_per_s"] > 0 and t["mfu"] > 0 for t in by_check["throughput"])
    refit = by_check["refit"][0]
    assert refit["refit/checksum_ok"] == 1.0 and refit["rollout/logprob_abs_diff"] < 0.02
    ref = by_check["reference"][0]  # the KL reference is the initial model; the policy comes back exact
    assert ref["ref_vs_initial_max_abs"] == 0.0 and ref["policy_back_exact"] is True
    assert ref["policy_moved_max_abs"] > 0 and ref["reference_gib"] > 0
    lent = by_check["ipc"][0]  # a bucket lent to a fresh process arrives whole (shared memory on CPU)
    assert lent["bytes_ok"] is True and lent["bucket_mb"] == 2 and lent["borrow_vs_memcpy"] > 0
