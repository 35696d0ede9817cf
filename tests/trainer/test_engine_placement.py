"""Where and in what precision the trainer's engine runs: rollout.dtype resolved through the platform and
honoured by the engine's live weights; the engine bound to this rank's device through vLLM's executor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.dist import run_distributed


def _bf16_engine_after_refit(run_dir: str) -> dict:

    from megatron_grpo.config import load_config
    from megatron_grpo.launch import shutdown
    from megatron_grpo.plan.trace import full_length_rollout
    from megatron_grpo.refit.stream import refit
    from megatron_grpo.trainer.probe import logprob_probe
    from megatron_grpo.trainer.setup import build_run

    cfg = load_config(None, ["rollout.dtype=bf16", "trainer.test_freq=0", "logging.progress_bar=false"])
    run = build_run(cfg, Path(run_dir))
    try:
        metrics = refit(run.policy, run.engines.local, run.engine_dtype)
        held = run.engines.local._llm.collective_rpc(
            lambda worker: sorted({str(p.dtype) for p in worker.model_runner.get_model().parameters()}))[0]
        probe = logprob_probe(run.policy, run.engines, full_length_rollout(cfg, 1, 1)[0])
        return {"policy": str(run.policy.dtype), "engine": str(run.engine_dtype), "held": held,
                "checksum_ok": metrics["refit/checksum_ok"], "probe": probe["rollout/logprob_abs_diff"],
                "bytes_per_param": metrics["refit/bytes"] / sum(p.numel() for p in run.policy.model[0].parameters()),
                "auto_on_cpu": load_config(None).rollout.engine_dtype("fp32")}
    finally:
        run.scorer.close()
        run.engines.close()
        shutdown()


@pytest.mark.slow
def test_engine_weights_are_bf16_when_asked(tmp_path):
    out = run_distributed(_bf16_engine_after_refit, 1, str(tmp_path))[0]
    assert out["policy"] == "torch.float32" and out["engine"] == "torch.bfloat16"
    assert out["held"] == ["torch.bfloat16"]  # every live engine weight, read back from the worker
    assert out["checksum_ok"] == 1.0  # the engine holds exactly the bf16 casts that were sent
    assert out["bytes_per_param"] < 2.1  # the stream itself is bf16 (vocab padding aside)
    assert 0 < out["probe"] < 0.05  # the precision gap shows in the trainer-vs-engine log-probs
    assert out["auto_on_cpu"] == "fp32"  # auto = the policy's dtype on CPU


def test_the_run_records_the_resolved_engine_dtype(tmp_path):
    from megatron_grpo.config import load_config
    from megatron_grpo.trainer.setup import write_provenance

    write_provenance(load_config(None), tmp_path)  # rollout.dtype: auto, on CPU
    assert load_config(tmp_path / "config.yaml").rollout.dtype == "fp32"


def test_engine_executor_binds_the_ranks_device(monkeypatch):
    """vLLM's default single-process executor puts every rank's engine on device 0; the engine's executor
    reads LOCAL_RANK, which the trainer sets from its own placement (srun sets only SLURM_LOCALID)."""
    from vllm.v1.executor.uniproc_executor import ExecutorWithExternalLauncher

    from megatron_grpo import platform
    from megatron_grpo.rollout.vllm_engine import _launch_env_kept, executor_env

    monkeypatch.setattr(platform, "_local_rank", 3)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with _launch_env_kept():
        os.environ.update(executor_env())
        _, rank, local_rank = ExecutorWithExternalLauncher._distributed_args(None)
    assert (rank, local_rank) == (0, 3)
    assert "LOCAL_RANK" not in os.environ  # the build's variables do not leak into the trainer's env

