"""Qwen2 and Qwen3-MoE through the Megatron policy: per-token log-probs equal transformers' (fp32), and
every parallel layout (expert parallel included) computes the same log-probs and the same optimizer step
as one process. The dense Qwen3 cases live in test_parallel.py; this reuses its worker and checks."""

from __future__ import annotations

import pytest

from tests.dist import run_distributed
from tests.model.test_parallel import _assert_matches_transformers, _assert_same, _worker
from tests.model.tiny import hf_model, hf_state_dict, tiny_moe_config, tiny_qwen2_config

CONFIGS = {"qwen2": tiny_qwen2_config, "qwen3_moe": tiny_moe_config}
# Without the load-balancing loss (tests/model/test_moe_aux_loss.py checks it at EP1 and EP2)
MODEL_KW = {"qwen2": {}, "qwen3_moe": {"moe_aux_loss_coef": 0.0}}


@pytest.fixture(scope="module")
def reference(request):
    config = CONFIGS[request.param]()
    model = hf_model(config)
    weights = hf_state_dict(model, config["tie_word_embeddings"])
    single = run_distributed(_worker, 1, config, weights, {}, MODEL_KW[request.param])[0]
    return request.param, config, model, weights, single


@pytest.mark.parametrize("reference", list(CONFIGS), indirect=True)
def test_single_process_matches_transformers(reference):
    _, config, model, weights, single = reference
    _assert_matches_transformers(model, single, config["vocab_size"])
    assert single["weights"].keys() == weights.keys()  # exported under the checkpoint's names
    assert single["applied"] and max((single["weights"][k] - v).abs().max().item() for k, v in weights.items()) > 1e-4


LAYOUTS = {
    "qwen2": {"tp2": (2, {"tensor": 2})},
    "qwen3_moe": {
        "ep2": (2, {"expert": 2}),  # each rank holds 2 of the 4 experts; tokens cross by all-to-all
        # (TP2 with every expert split over TP too, ETP2, is checked by tests/checkpoint and tests/refit)
        # experts whole (ETP 1): all 4 on both TP ranks, or 2 per rank with the EP group spanning TP
        "tp2_sp_etp1": (2, {"tensor": 2, "sequence_parallel": True, "expert_tensor": 1}),
        "tp2_sp_ep2": (2, {"tensor": 2, "sequence_parallel": True, "expert": 2, "expert_tensor": 1}),
        "pp2": (2, {"pipeline": 2}),
    },
}
CASES = [(family, layout) for family, layouts in LAYOUTS.items() for layout in layouts]


@pytest.mark.slow
@pytest.mark.parametrize(("reference", "layout"), CASES, ids=[f"{f}-{la}" for f, la in CASES], indirect=["reference"])
def test_layout_matches_single_process(reference, layout):
    family, config, _, weights, single = reference
    world, kwargs = LAYOUTS[family][layout]
    for result in run_distributed(_worker, world, config, weights, kwargs, MODEL_KW[family]):
        _assert_same(result, single, weights)
