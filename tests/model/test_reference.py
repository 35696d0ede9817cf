"""The KL term's reference policy: the initial weights in the policy's own layout (one process and TP2),
swapped in for its log-probs and out again bit-exact, through updates that move the policy."""

from __future__ import annotations

import pytest
import torch

from tests.dist import run_distributed
from tests.model.tiny import hf_model, hf_state_dict, model_cfg, parallel_cfg, smooth_adam, tiny_hf_config

LEN = 12


def _rollout(vocab: int):
    from megatron_grpo.algo import RolloutBatch

    g = torch.Generator().manual_seed(3)
    response_lens = torch.tensor([7, 4, 9, 6])
    mask = torch.arange(9)[None, :] < response_lens[:, None]
    return RolloutBatch(input_ids=torch.randint(1, vocab, (4, LEN), generator=g), prompt_lens=torch.full((4,), 3),
                        response_lens=response_lens, sampler_logprobs=-torch.rand(4, 9, generator=g) * mask,
                        rewards=torch.tensor([0.0, 1.0, 1.0, 0.0]), truncated=torch.zeros(4, dtype=torch.bool),
                        group_size=2)


def _worker(config: dict, weights: dict, layout: dict) -> dict:
    from megatron_grpo.config import AlgoConfig
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.launch import init_distributed, shutdown
    from megatron_grpo.model.policy import MegatronPolicy
    from megatron_grpo.model.reference import ReferencePolicy
    from megatron_grpo.model.update import rollout_logprobs, update_policy

    par = parallel_cfg(**layout)
    init_distributed(par, seed=1)
    policy = MegatronPolicy(arch_from_dict(config), model_cfg(), par, smooth_adam(lr=0.05), total_steps=3,
                            hf_weights=weights)
    reference = ReferencePolicy(policy.model)
    start = dict(policy.hf_tensors())
    rollout = _rollout(config["vocab_size"])
    initial = rollout_logprobs(policy, rollout, 1.0, LEN)
    cfg = AlgoConfig(mini_batch_prompts=2, kl_coef=0.5, micro_batch_tokens=2 * LEN)
    first = update_policy(policy, rollout, cfg, max_response_len=9, temperature=1.0, reference=reference)
    second = update_policy(policy, rollout, cfg, max_response_len=9, temperature=1.0, reference=reference)
    before = dict(policy.hf_tensors())
    with reference.swapped_in():
        ref = rollout_logprobs(policy, rollout, 1.0, LEN)
        inside = dict(policy.hf_tensors())
        with pytest.raises(RuntimeError, match="already swapped in"):
            with reference.swapped_in():
                pass
    after = dict(policy.hf_tensors())
    moved = rollout_logprobs(policy, rollout, 1.0, LEN)
    shutdown()
    return {"initial": initial, "ref": ref, "moved": moved, "first_kl": first["actor/kl_loss"],
            "second_kl": second["actor/kl_loss"], "before": before, "after": after, "inside": inside,
            "start": start, "nbytes": reference.nbytes}


@pytest.mark.slow
def test_reference_holds_the_initial_weights_and_the_policy_comes_back_exact():
    config = tiny_hf_config(tie=True, layers=2)
    weights = hf_state_dict(hf_model(config), tie=True)
    one = run_distributed(_worker, 1, config, weights, {})[0]
    tp2 = run_distributed(_worker, 2, config, weights, {"tensor": 2})
    for out in [one, *tp2]:
        torch.testing.assert_close(out["ref"], out["initial"], rtol=0, atol=0)  # the reference did not move
        assert (out["moved"] - out["initial"]).abs().max() > 1e-3  # the policy did
        for name, w in out["before"].items():
            assert torch.equal(out["after"][name], w), name  # swapped back bit-exact
        for name, w in out["start"].items():  # inside, the model computes with the initial weights
            assert torch.equal(out["inside"][name], w), name
        # 1st update: pi = pi_ref, KL 0; then the policy has moved away from it
        assert abs(out["first_kl"]) < 1e-9 and out["second_kl"] > 1e-6
    torch.testing.assert_close(tp2[0]["ref"], one["ref"], rtol=1e-5, atol=1e-5)  # the layout changes nothing
    assert tp2[0]["nbytes"] < one["nbytes"]  # each TP rank holds its shard only
