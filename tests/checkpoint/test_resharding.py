"""A checkpoint saved at TP2 (distributed optimizer) resumes at TP1 x DP2 and at PP2 x DP... exactly.

Run A (TP2): step 1, save, then step 2. Run B, per layout: fresh policy, load, then the same step 2.
Log-probs after loading must equal A's after step 1; weights after step 2 must equal A's (so Adam
moments, fp32 main weights and the LR schedule all survived the reshard).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.dist import run_distributed
from tests.model.tiny import hf_model, hf_state_dict, smooth_adam, tiny_hf_config, tiny_moe_config

SEQS, LEN = 4, 10
OPTIM = dataclasses.replace(smooth_adam(), warmup_steps=3)  # the LR changes every step: the schedule must resume


def _batch(vocab: int):
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, vocab, (SEQS, LEN), generator=g)
    mask = torch.ones(SEQS, LEN)
    mask[:, -1] = 0
    return tokens, mask, torch.randn(SEQS, 1, generator=g).expand(SEQS, LEN).contiguous()


def _step(policy, vocab: int):
    """One update on the whole batch, split over DP ranks, loss normalised by the global token count."""
    from megatron.core import parallel_state as ps

    tokens, mask, adv = _batch(vocab)
    dp, rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
    mbs = [{"tokens": tokens[[i]], "mask": mask[[i]], "adv": adv[[i]]} for i in range(rank, SEQS, dp)]
    total = mask.sum()
    policy.train_step(mbs, lambda lp, _entropy, b: (-(lp * b["adv"] * b["mask"]).sum() / total, {}))


def _snapshot(policy, vocab: int) -> dict:
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    tokens, _, _ = _batch(vocab)
    logprobs = torch.cat([o["logprobs"] for o in policy.logprobs([{"tokens": t[None]} for t in tokens])])
    stages = [None] * ps.get_pipeline_model_parallel_world_size()
    dist.all_gather_object(stages, dict(policy.hf_tensors()), group=ps.get_pipeline_model_parallel_group())
    return {"logprobs": logprobs, "weights": {k: v for s in stages for k, v in s.items()}, "lr": policy.lr}


def _policy(config: dict, layout: dict, weights=None):
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.launch import init_distributed
    from megatron_grpo.model.policy import MegatronPolicy
    from tests.model.tiny import model_cfg, parallel_cfg

    par = parallel_cfg(**layout)
    init_distributed(par, seed=99)
    return MegatronPolicy(arch_from_dict(config), model_cfg(), par, OPTIM, total_steps=10, hf_weights=weights)


def _train_save_train(config: dict, weights: dict, root: str, layout: dict | None = None):
    from megatron_grpo.checkpoint import save_checkpoint
    from megatron_grpo.launch import shutdown

    policy = _policy(config, layout or {"tensor": 2}, weights)
    _step(policy, config["vocab_size"])
    save_checkpoint(root, 1, policy, {"step": 1, "sampler": [3, 4]}, keep_last=2)
    after_save = _snapshot(policy, config["vocab_size"])
    _step(policy, config["vocab_size"])
    after_step2 = _snapshot(policy, config["vocab_size"])
    shutdown()
    return after_save, after_step2


def _resume_at_layouts(config: dict, root: str, layouts: dict):
    from megatron.core import parallel_state as ps

    from megatron_grpo.checkpoint import load_checkpoint
    from megatron_grpo.launch import shutdown

    out = {}
    for name, layout in layouts.items():
        policy = _policy(config, layout)
        extra = load_checkpoint(root, policy)
        loaded = _snapshot(policy, config["vocab_size"])
        _step(policy, config["vocab_size"])
        out[name] = (extra, loaded, _snapshot(policy, config["vocab_size"]))
        ps.destroy_model_parallel()
    shutdown()
    return out


def _assert_weights_close(got: dict, expected: dict, before: dict):
    assert got.keys() == expected.keys()
    for name, w in expected.items():  # the update (~ lr * Adam direction) must agree, relative to its size
        update, want = got[name] - before[name], w - before[name]
        torch.testing.assert_close(update, want, rtol=1e-4, atol=1e-4 * want.abs().max().item(), msg=name)


def _save_and_resume(tmp_path, config: dict, saved_at: dict, layouts: dict):
    weights = hf_state_dict(hf_model(config), tie=config["tie_word_embeddings"])
    root = str(tmp_path / "ckpt")
    after_save, after_step2 = run_distributed(_train_save_train, 2, config, weights, root, saved_at)[0]
    resumed = run_distributed(_resume_at_layouts, 2, config, root, layouts)[0]
    for name in layouts:
        extra, loaded, stepped = resumed[name]
        assert extra == {"step": 1, "sampler": [3, 4]}
        assert loaded["lr"] == after_save["lr"]
        assert (loaded["logprobs"] - after_save["logprobs"]).abs().max() <= 1e-5, name
        for k, w in after_save["weights"].items():
            assert torch.equal(loaded["weights"][k], w), (name, k)  # loading itself is exact
        assert stepped["lr"] == after_step2["lr"] != after_save["lr"]
        _assert_weights_close(stepped["weights"], after_step2["weights"], after_save["weights"])


@pytest.mark.slow
def test_save_tp2_resume_at_tp1_and_pp2(tmp_path):
    _save_and_resume(tmp_path, tiny_hf_config(tie=False), {"tensor": 2}, {"tp1_dp2": {}, "pp2": {"pipeline": 2}})


@pytest.mark.slow
def test_moe_save_ep2_resume_at_ep1_and_etp2(tmp_path):
    """Expert parallelism reshards too: the chained (dense + expert) distributed optimizer's state moves
    from 2 experts per rank to all 4 on each rank (EP1 x DP2), and to every expert split over TP."""
    layouts = {"ep1_dp2": {}, "tp2_etp2": {"tensor": 2, "sequence_parallel": True}}
    _save_and_resume(tmp_path, tiny_moe_config(), {"expert": 2}, layouts)
