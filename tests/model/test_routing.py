"""Routing replay through Megatron's routers: a replayed routing gives transformers' log-probs under the same
forced routing (fp32), and the TP2+SP+EP2 and PP2 layouts replay exactly what one process does (log-probs and
the optimizer step)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from megatron_grpo.model.routing import router_targets
from tests.dist import run_distributed
from tests.model.test_family_parity import MODEL_KW
from tests.model.test_parallel import LEN, SEQS, _assert_same, _batch, _worker
from tests.model.tiny import hf_model, hf_state_dict, tiny_moe_config


def test_router_targets_match_a_naive_gather():
    g = torch.Generator().manual_seed(0)
    b, s, layers, k, padded = 3, 5, 2, 2, 6
    routed = torch.randint(0, 8, (b, s, layers, k), generator=g, dtype=torch.int16)
    routed[1, 3:] = -1  # not routed by the engine
    for tp in (1, 2, 3):
        for rank in range(tp):
            for layer in range(layers):
                got = router_targets(routed, layer, padded, rank, tp)
                local = padded // tp
                expected = []
                for pos in range(rank * local, (rank + 1) * local):  # sequence-major, this rank's slice
                    for row in range(b):
                        known = pos < s and routed[row, pos, layer, 0] >= 0
                        expected.append(routed[row, pos, layer].tolist() if known else list(range(k)))
                assert got.tolist() == expected, (tp, rank, layer)
                assert got.dtype == torch.long


def _random_routing(config: dict) -> torch.Tensor:
    """``[SEQS, LEN, layers, k]`` distinct experts per token, the last token not routed (as an engine gives)."""
    g = torch.Generator().manual_seed(3)
    experts, k = config["num_experts"], config["num_experts_per_tok"]
    scores = torch.rand(SEQS, LEN, config["num_hidden_layers"], experts, generator=g)
    routed = scores.topk(k, dim=-1).indices.to(torch.int16)
    routed[:, -1] = -1
    return routed


def _forced_hf_logprobs(model, tokens: torch.Tensor, routed: torch.Tensor) -> torch.Tensor:
    """transformers' log-probs with every router's choice replaced by ``routed`` (its own scores weigh them)."""
    originals = []
    for layer, block in enumerate(model.model.layers):
        gate = block.mlp.gate
        # transformers flattens batch-major; rows without a routing get experts 0..k-1 (never read)
        idx = routed[:, :, layer].long().reshape(-1, gate.top_k)
        idx = torch.where(idx < 0, torch.arange(gate.top_k), idx)

        def forward(hidden, gate=gate, idx=idx):
            logits = F.linear(hidden.reshape(-1, gate.hidden_dim), gate.weight)
            weights = torch.softmax(logits, dim=-1, dtype=torch.float).gather(1, idx)
            if gate.norm_topk_prob:
                weights = weights / weights.sum(-1, keepdim=True)
            return logits, weights.to(logits.dtype), idx

        originals.append((gate, gate.forward))
        gate.forward = forward
    try:
        with torch.no_grad():
            logits = model(tokens).logits
    finally:
        for gate, original in originals:
            gate.forward = original
    return torch.log_softmax(logits, -1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]


@pytest.fixture(scope="module")
def replayed():
    config = tiny_moe_config()
    model = hf_model(config)
    weights = hf_state_dict(model, config["tie_word_embeddings"])
    routed = _random_routing(config)
    single = run_distributed(_worker, 1, config, weights, {}, MODEL_KW["qwen3_moe"], routed)[0]
    return config, model, weights, routed, single


def test_replayed_routing_gives_transformers_logprobs_under_that_routing(replayed):
    config, model, _, routed, single = replayed
    tokens, _, _ = _batch(config["vocab_size"])
    got = torch.stack([single["logprobs"][i][0, :-1] for i in range(SEQS)])
    torch.testing.assert_close(got, _forced_hf_logprobs(model, tokens, routed), atol=1e-5, rtol=0)
    with torch.no_grad():  # and the replay mattered: the model's own routing gives other log-probs
        free = torch.log_softmax(model(tokens).logits, -1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    assert (got - free).abs().max() > 1e-2
    assert single["applied"]


@pytest.mark.slow
@pytest.mark.parametrize("layout", [{"tensor": 2, "sequence_parallel": True, "expert": 2, "expert_tensor": 1},
                                    {"pipeline": 2}], ids=["tp2_sp_ep2", "pp2"])
def test_layouts_replay_as_one_process(replayed, layout):
    config, _, weights, routed, single = replayed
    for result in run_distributed(_worker, 2, config, weights, layout, MODEL_KW["qwen3_moe"], routed):
        _assert_same(result, single, weights)


def _batched_worker(config: dict, weights: dict, layout: dict, routed: torch.Tensor) -> torch.Tensor:
    """Log-probs of all SEQS sequences in ONE micro-batch, replaying ``routed``: several sequences per
    router call, so a batch-major/sequence-major mix-up cannot hide."""
    from megatron_grpo.config import OptimizerConfig
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.launch import init_distributed, shutdown
    from megatron_grpo.model.policy import MegatronPolicy
    from tests.model.tiny import model_cfg, parallel_cfg

    par = parallel_cfg(**layout)
    init_distributed(par, seed=1)
    policy = MegatronPolicy(arch_from_dict(config), model_cfg(**MODEL_KW["qwen3_moe"]), par, OptimizerConfig(),
                            total_steps=1, hf_weights=weights)
    tokens, _, _ = _batch(config["vocab_size"])
    out = policy.logprobs([{"tokens": tokens, "routed_experts": routed}])[0]["logprobs"]
    shutdown()
    return out


@pytest.mark.slow
def test_a_micro_batch_of_several_sequences_replays_under_sequence_parallelism(replayed):
    config, model, weights, routed, _ = replayed
    tokens, _, _ = _batch(config["vocab_size"])
    expected = _forced_hf_logprobs(model, tokens, routed)
    layout = {"tensor": 2, "sequence_parallel": True, "expert_tensor": 1}
    for logprobs in run_distributed(_batched_worker, 2, config, weights, layout, routed):
        torch.testing.assert_close(logprobs[:, :-1], expected, atol=1e-5, rtol=0)
