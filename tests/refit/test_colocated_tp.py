"""Refit into a colocated engine with tensor parallelism: two trainer ranks are the two workers of ONE
TP-2 vLLM engine (vLLM's external launcher over the trainer's world), each holding half of its weights.

One world-2 gloo run builds the engine from dummy weights, then refits it from Megatron policies in three
layouts (data-parallel, TP2, PP2; each from its own seed, so every refit must change the engine) and
returns what the tests below assert on.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from tests.dist import run_distributed
from tests.model.tiny import model_cfg, parallel_cfg
from tests.refit.test_stream import ENGINE, _policy_scores, model_config
from tests.rollout.rollout_helpers import SEQUENCES, TINY, mean_abs_diff

pytestmark = pytest.mark.slow

LAYOUTS = {"dp2": {}, "tp2": {"tensor": 2}, "pp2": {"pipeline": 2}}
QKV = "model.layers.0.self_attn.qkv_proj.weight"


def _worker(model_dir: str) -> dict:
    from megatron.core import parallel_state as ps

    from megatron_grpo.config import OptimizerConfig
    from megatron_grpo.config.rollout import SamplingConfig
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.launch import init_distributed, shutdown
    from megatron_grpo.model.policy import MegatronPolicy
    from megatron_grpo.refit.stream import refit
    from megatron_grpo.rollout.groups import ColocatedEngines
    from megatron_grpo.rollout.vllm_engine import build_engine

    env = init_distributed(parallel_cfg(), seed=1)
    engines = ColocatedEngines(build_engine(model_dir, TINY, dataclasses.replace(ENGINE, tensor_parallel=2), "fp32",
                                            load_weights=False), tensor_parallel=2)
    shapes = engines.local._llm.collective_rpc(  # in process: the worker is this rank's
        lambda worker: {n: list(p.shape) for n, p in worker.model_runner.get_model().named_parameters()})[0]
    prompts = [seq[:n] for seq, n in SEQUENCES]
    out = {"qkv_shape": shapes[QKV], "cases": {}}
    for seed, (name, layout) in enumerate(LAYOUTS.items()):
        ps.destroy_model_parallel()
        par = parallel_cfg(**layout)
        init_distributed(par, seed=1, env=env)
        policy = MegatronPolicy(arch_from_dict(model_config(True)), model_cfg(), par,
                                OptimizerConfig(lr=1e-2, weight_decay=0.0, grad_clip=0.0), total_steps=1, seed=seed)
        every = [[seq for seq, _ in SEQUENCES], [n for _, n in SEQUENCES]]
        before = engines.score_each(*every)
        metrics = refit(policy, engines.local, torch.float32)
        after = engines.score_each(*every)
        want = _policy_scores(policy)
        samples = engines.generate(prompts, SamplingConfig(n=2, max_response_length=6), seed=seed)
        mine = engines.local.generate(prompts, SamplingConfig(n=2, max_response_length=6), seed=seed)
        out["cases"][name] = {
            "before": [mean_abs_diff(s, want) for s in before], "after": [mean_abs_diff(s, want) for s in after],
            "metrics": metrics, "samples": [[s.token_ids for s in g] for g in samples],
            "mine": [[s.token_ids for s in g] for g in mine]}
    engines.close()
    shutdown()
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    path = tmp_path_factory.mktemp("tp2_engine")
    (path / "config.json").write_text(json.dumps(model_config(True)))  # dummy weights: the refit brings them
    # fresh interpreters: vLLM's CPU all-reduce for TP > 1 keeps its shared memory (/dev/shm) in a C++ object
    # that only a normal interpreter exit unlinks, and forked ranks end with os._exit
    return run_distributed(_worker, 2, str(path), timeout=600, fresh=True)


def test_each_rank_holds_half_of_the_engine(ranks):
    config = model_config(True)
    q_kv = (config["num_attention_heads"] + 2 * config["num_key_value_heads"]) * config["head_dim"]
    assert [r["qkv_shape"] for r in ranks] == [[q_kv // 2, config["hidden_size"]]] * 2


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_refit_from_any_layout_gives_the_engine_megatrons_logprobs(ranks, layout):
    case = ranks[0]["cases"][layout]
    assert len(case["before"]) == 1 and case["before"][0] > 1e-2  # one engine, which the refit must change
    assert case["after"][0] < 1e-4
    assert ranks[1]["cases"][layout]["before"] == []  # rank 0 reports for every engine
    assert "refit/checksum_ok" not in case["metrics"]  # a TP worker holds shards: the probe checks instead


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_both_workers_sample_the_same_tokens_and_every_rank_gets_them(ranks, layout):
    cases = [r["cases"][layout] for r in ranks]
    assert cases[0]["mine"] == cases[1]["mine"]  # the two ranks of the engine computed the same samples
    assert cases[0]["samples"] == cases[1]["samples"] == cases[0]["mine"]
    assert len(cases[0]["samples"]) == len(SEQUENCES)
