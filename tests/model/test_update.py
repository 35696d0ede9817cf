"""``update_policy`` under expert parallelism when the packer cannot give every rank the same number of
micro-batches (3 sequences of one micro-batch each over 2 ranks): the rank with fewer runs a padding
micro-batch, so the experts' all-to-all stays in step (else the EP group would hang), and the update equals
one process's."""

from __future__ import annotations

import pytest
import torch

from tests.dist import run_distributed
from tests.model.tiny import hf_model, hf_state_dict, model_cfg, parallel_cfg, smooth_adam, tiny_moe_config

LEN = 12


def _rollout(vocab: int):
    from megatron_grpo.algo import RolloutBatch

    g = torch.Generator().manual_seed(5)
    response_lens = torch.tensor([7, 4, 9])
    prompt_lens = torch.tensor([3, 3, 3])
    sampler = -torch.rand(3, 9, generator=g) * (torch.arange(9)[None, :] < response_lens[:, None])
    return RolloutBatch(input_ids=torch.randint(1, vocab, (3, LEN), generator=g), prompt_lens=prompt_lens,
                        response_lens=response_lens, sampler_logprobs=sampler, rewards=torch.tensor([0.0, 1.0, 0.5]),
                        truncated=torch.zeros(3, dtype=torch.bool), group_size=3)


def _worker(config: dict, weights: dict, layout: dict) -> tuple[dict, dict]:
    from megatron_grpo.config import AlgoConfig
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.launch import init_distributed, shutdown
    from megatron_grpo.model.policy import MegatronPolicy
    from megatron_grpo.model.update import update_policy

    par = parallel_cfg(**layout)
    init_distributed(par, seed=1)
    policy = MegatronPolicy(arch_from_dict(config), model_cfg(moe_aux_loss_coef=0.0), par, smooth_adam(),
                            total_steps=2, hf_weights=weights)
    cfg = AlgoConfig(mini_batch_prompts=1, micro_batch_tokens=LEN)  # one sequence per micro-batch
    metrics = update_policy(policy, _rollout(config["vocab_size"]), cfg, max_response_len=9, temperature=1.0)
    after = dict(policy.hf_tensors())
    shutdown()
    return metrics, after


@pytest.mark.slow
def test_expert_parallel_ranks_with_fewer_micro_batches_pad_and_update_as_one_process():
    config = tiny_moe_config()
    weights = hf_state_dict(hf_model(config), tie=False)
    one_metrics, one = run_distributed(_worker, 1, config, weights, {})[0]
    for metrics, after in run_distributed(_worker, 2, config, weights, {"expert": 2}, timeout=300):
        assert metrics["actor/updates_applied"] == 1.0
        assert metrics["actor/pg_loss"] == pytest.approx(one_metrics["actor/pg_loss"], rel=1e-5, abs=1e-7)
        for name, w in one.items():
            torch.testing.assert_close(after[name], w, atol=1e-6, rtol=1e-5, msg=name)
