"""The MoE load-balancing loss through the policy: its gradient is ``coef`` x the mean over micro-batches of
Megatron's switch loss (E / (k T^2) sum_e tokens_e x sum_t p_te, summed over layers), whatever the token
count of a micro-batch, and the metric is that loss's mean; the expert-load metrics are the most and least
loaded expert's tokens over the mean expert's. The reference is the same formula on transformers' router
logits, differentiated by autograd, and their top-k counted."""

from __future__ import annotations

import pytest
import torch

from tests.dist import run_distributed
from tests.model.tiny import hf_model, hf_state_dict, model_cfg, parallel_cfg, smooth_adam, tiny_moe_config

COEF, LR = 0.01, 1e-3
SEQS, LEN = 2, 12


def _tokens(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (SEQS, LEN), generator=torch.Generator().manual_seed(11))


def _switch_loss(logits: torch.Tensor, topk: int) -> torch.Tensor:
    probs = torch.softmax(logits.float(), dim=-1)
    counts = torch.zeros_like(probs).scatter(1, probs.topk(topk, dim=-1).indices, 1.0).sum(0)
    tokens, experts = probs.shape
    return experts / (topk * tokens * tokens) * (counts * probs.sum(0)).sum()


def _reference(model, config: dict) -> tuple[dict[str, torch.Tensor], float]:
    """Router-weight gradients of COEF x mean over sequences of the per-layer losses' sum, and the mean
    per-layer loss."""
    model.zero_grad()
    per_seq, load = [], 0.0
    for seq in _tokens(config["vocab_size"]):
        logits = model(seq[None], output_router_logits=True).router_logits
        per_seq.append(torch.stack([_switch_loss(layer, config["num_experts_per_tok"]) for layer in logits]))
        chosen = [layer.topk(config["num_experts_per_tok"], dim=-1).indices for layer in logits]
        load = load + torch.stack([torch.bincount(c.flatten(), minlength=config["num_experts"]) for c in chosen])
    losses = torch.stack(per_seq)  # [seq, layer]
    (COEF * losses.sum(1).mean()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if name.endswith("mlp.gate.weight")}
    ratio = load.float() / load.float().mean(dim=1, keepdim=True)  # [layer, expert] tokens / the mean expert's
    return grads, losses.mean().item(), (ratio.max().item(), ratio.min().item())


def _worker(config: dict, weights: dict, layout: dict):
    import dataclasses

    from megatron.core import parallel_state as ps

    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.launch import init_distributed, shutdown
    from megatron_grpo.model.policy import MegatronPolicy

    par = parallel_cfg(**layout)
    init_distributed(par, seed=1)
    optim = dataclasses.replace(smooth_adam(), lr=LR)
    policy = MegatronPolicy(arch_from_dict(config), model_cfg(moe_aux_loss_coef=COEF), par, optim,
                            total_steps=2, hf_weights=weights)
    tokens = _tokens(config["vocab_size"])
    dp, rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
    mbs = [{"tokens": tokens[[i]]} for i in range(rank, SEQS, dp)]  # one sequence per micro-batch
    metrics, applied, _ = policy.train_step(mbs, lambda lp, _ent, _b: ((lp * 0.0).sum(), {}))
    after = {k: v for k, v in policy.hf_tensors() if k.endswith("mlp.gate.weight")}
    shutdown()
    return metrics, applied, after


@pytest.mark.parametrize("layout", [(1, {}), (2, {"expert": 2}),
                                    (2, {"tensor": 2, "sequence_parallel": True, "expert_tensor": 1})],
                         ids=["one", "ep2", "tp2_sp"])
def test_aux_loss_gradient_and_metric_match_the_formula(layout):
    config = tiny_moe_config()
    model = hf_model(config)
    weights = hf_state_dict(model, tie=False)
    grads, mean_loss, (most, least) = _reference(model, config)
    world, kwargs = layout
    metrics, applied, after = run_distributed(_worker, world, config, weights, kwargs)[0]
    assert applied and metrics["moe/load_balancing_loss"] == pytest.approx(mean_loss, rel=1e-5)
    assert (metrics["moe/expert_load_max"], metrics["moe/expert_load_min"]) == pytest.approx((most, least))
    assert most > 1.0  # a random router is not balanced: the metric has something to show
    for name, grad in grads.items():
        # smooth Adam's first step is -lr x g / (|g| + 1). Within 2% over the tensor (fp32 sums of small
        # gradients); a token-count scaling left in would be off by the micro-batch's 12 tokens
        step, expected = (weights[name] - after[name]) / LR, grad / (grad.abs() + 1.0)
        assert (step - expected).norm() <= 2e-2 * expected.norm(), name
