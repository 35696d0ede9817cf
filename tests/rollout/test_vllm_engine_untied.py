"""An untied tiny Qwen3 started from dummy weights: the first update provides the real ones (one engine)."""

from __future__ import annotations

import pytest
from rollout_helpers import SEQUENCES, TINY, engine_config, hf_logprobs, hf_weights, mean_abs_diff, random_model

from megatron_grpo.rollout.vllm_engine import build_engine
from megatron_grpo.rollout.weight_specs import WeightMismatchError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models():
    return random_model(seed=3, tie=False), random_model(seed=4, tie=False, init_std=0.3)


@pytest.fixture(scope="module")
def engine(models, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("untied")
    models[0].config.save_pretrained(model_dir)  # config only: no checkpoint on disk
    return build_engine(model_dir, TINY, engine_config(), dtype="fp32", load_weights=False)


def check_matches(engine, model) -> None:
    got = engine.score([s for s, _ in SEQUENCES], [n for _, n in SEQUENCES])
    assert mean_abs_diff(got, [hf_logprobs(model, s, n) for s, n in SEQUENCES]) < 1e-4


def test_untied_lm_head_is_required(engine, models):
    assert "lm_head.weight" in engine.expected_weights()
    without_head = [(n, t) for n, t in hf_weights(models[0]) if n != "lm_head.weight"]
    with pytest.raises(WeightMismatchError, match="lm_head.weight: missing"):
        engine.update_weights(without_head)


def test_first_update_replaces_dummy_weights(engine, models):
    engine.update_weights(iter(hf_weights(models[0])))
    check_matches(engine, models[0])


def test_second_update_switches_model(engine, models):
    engine.update_weights(iter(hf_weights(models[1])))
    check_matches(engine, models[1])
