"""An engine in processes of its own: one trainer rank and a TP-2 vLLM engine (a server process and its
two workers), the refit crossing over the weight-transfer group.

Engine builds dominate on 2 cores, so ONE trainer process does all the work against one engine and the
tests assert on what it returns: log-probs equal Megatron's after a refit, samples carry the version,
a bucket damaged in transit is named and leaves the engine's weights as they were, and the next
complete refit goes through.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import pytest
import torch

from tests.dist import run_distributed
from tests.model.tiny import model_cfg, parallel_cfg
from tests.refit.test_stream import _engine_scores, _policy_scores
from tests.rollout.rollout_helpers import TINY, engine_config, mean_abs_diff

pytestmark = pytest.mark.slow

ENGINE = dataclasses.replace(engine_config(), placement="disaggregated", tensor_parallel=2)
PROMPT = [2, 6, 13, 8, 14, 15]


def _damaging(pack):
    """``transfer.pack`` whose first bucket gets one byte flipped after its checksums were taken."""
    damaged = []

    def damaging_pack(bucket):
        metas, flat = pack(bucket)
        if not damaged:
            flat[metas[0].offset] ^= 0xFF
            damaged.append(metas[0].name)
        return metas, flat

    return damaging_pack, damaged


def _refit_error(policy, remote, version: int) -> str | None:
    from megatron_grpo.refit.stream import refit

    try:
        refit(policy, remote, torch.float32, version=version)
    except Exception as exc:  # what the trainer would see
        return f"{type(exc).__name__}: {exc}"
    return None


def _trainer() -> dict:
    from megatron_grpo.config import OptimizerConfig
    from megatron_grpo.config.rollout import SamplingConfig
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.launch import init_distributed, shutdown
    from megatron_grpo.model.policy import MegatronPolicy
    from megatron_grpo.refit import transfer
    from megatron_grpo.refit.stream import refit
    from megatron_grpo.rollout.groups import ProcessEngines
    from megatron_grpo.rollout.remote import connect_engines
    from megatron_grpo.trainer.probe import logprob_probe
    from megatron_grpo.trainer.rollout import to_rollout_batch

    init_distributed(parallel_cfg(), seed=1)
    arch = arch_from_dict(json.loads((TINY / "config.json").read_text()))
    old, new = (MegatronPolicy(arch, model_cfg(), parallel_cfg(), OptimizerConfig(), total_steps=1, seed=s)
                for s in (0, 1))
    sampling = SamplingConfig(n=2, max_response_length=4)
    with tempfile.TemporaryDirectory() as model_dir:  # dummy weights: the engine needs only config.json
        (Path(model_dir) / "config.json").write_text((TINY / "config.json").read_text())
        remote = connect_engines(ENGINE, Path(model_dir), str(TINY), "fp32", False, "127.0.0.1", "gloo",
                                 torch.device("cpu"))
    engines = ProcessEngines(remote)
    out = {"dummy_vs_old": mean_abs_diff(_engine_scores(remote), _policy_scores(old))}
    try:
        out["metrics"] = refit(old, remote, torch.float32, version=3)
        out["after_vs_old"] = mean_abs_diff(_engine_scores(remote), _policy_scores(old))
        samples = engines.generate([PROMPT], sampling, seed=0)
        out["versions"] = [s.version for s in samples[0]]
        batch = to_rollout_batch([_Item(PROMPT)], samples, [0.0, 1.0], 2)
        out["probe"] = logprob_probe(old, engines, batch)["rollout/logprob_abs_diff"]

        pack = transfer.pack
        transfer.pack, damaged = _damaging(pack)
        try:
            out["damaged_error"] = _refit_error(new, remote, 4)
        finally:
            transfer.pack = pack
        out["damaged"] = damaged
        out["kept_vs_old"] = mean_abs_diff(_engine_scores(remote), _policy_scores(old))
        out["kept_vs_new"] = mean_abs_diff(_engine_scores(remote), _policy_scores(new))
        out["kept_versions"] = [s.version for s in engines.generate([PROMPT], sampling, seed=0)[0]]

        out["retry"] = refit(new, remote, torch.float32, version=4)
        out["retry_vs_new"] = mean_abs_diff(_engine_scores(remote), _policy_scores(new))
        out["retry_versions"] = [s.version for s in engines.generate([PROMPT], sampling, seed=0)[0]]
    finally:
        engines.close()
        shutdown()
    return out


@dataclasses.dataclass
class _Item:
    prompt_ids: list[int]


@pytest.fixture(scope="module")
def result() -> dict:
    return run_distributed(_trainer, 1, timeout=600)[0]


def test_tp2_engine_logprobs_equal_megatron_after_a_refit(result):
    assert result["dummy_vs_old"] > 1e-2, "the engine already had these weights: the refit proves nothing"
    assert result["after_vs_old"] < 1e-4
    assert result["probe"] < 1e-4  # the trainer's probe, through the engine group
    assert result["metrics"]["refit/tensors"] > 0
    assert "refit/checksum_ok" not in result["metrics"]  # TP 2: no worker holds a whole tensor to read back


def test_samples_carry_the_policy_version_of_the_engine_weights(result):
    assert result["versions"] == [3, 3]
    assert result["kept_versions"] == [3, 3]  # the failed refit did not advance it
    assert result["retry_versions"] == [4, 4]


def test_a_bucket_damaged_in_transit_is_named_and_the_engine_keeps_its_weights(result):
    name = result["damaged"][0]
    assert result["damaged_error"] is not None and f"{name}: damaged in transit" in result["damaged_error"]
    assert "keeps its previous weights" in result["damaged_error"]
    assert result["kept_vs_old"] < 1e-4 and result["kept_vs_new"] > 1e-2
    assert result["retry_vs_new"] < 1e-4  # and the next complete refit goes through
