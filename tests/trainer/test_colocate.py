"""Colocated memory: the order of sleep, update, wake and refit in a step (recording stand-ins), and the
trainer's offload leaving training bit-identical (real Megatron buffers and optimizers, on CPU)."""

from __future__ import annotations

import types

import pytest
import torch

from tests.dist import run_distributed


class _Recorder:
    def __init__(self, log: list[str]):
        self.log = log

    def sleep(self, level=1):
        self.log.append(f"engine.sleep({level})")

    def wake_up(self, tags=None):
        self.log.append(f"engine.wake_up({','.join(tags)})")

    def offload(self, params=True):
        self.log.append(f"trainer.offload(params={params})")

    def onload(self):
        self.log.append("trainer.onload")


def test_one_step_sleeps_updates_wakes_and_refits_in_order(monkeypatch):
    from megatron_grpo.config import load_config
    from megatron_grpo.trainer import loop
    from megatron_grpo.trainer.colocate import Colocation

    log: list[str] = []
    rec = _Recorder(log)
    rollout = types.SimpleNamespace(rewards=torch.ones(4), prompt_lens=torch.ones(4), response_lens=torch.ones(4))

    def fake(name, result):
        def call(*args, **kwargs):
            log.append(name)
            return result
        return call

    monkeypatch.setattr(loop, "_rollout", fake("generate", (rollout, {})))
    monkeypatch.setattr(loop, "update_policy", fake("update", {"actor/updates_applied": 1.0, "actor/updates": 1.0}))
    monkeypatch.setattr(loop, "probe_trainer", fake("probe: trainer log-probs", object()))
    monkeypatch.setattr(loop, "refit", fake("refit", {}))
    monkeypatch.setattr(loop, "probe_engine", fake("probe: engine log-probs", {}))
    run = types.SimpleNamespace(cfg=load_config(None), step=0, nonfinite_streak=0, policy=rec, reference=None,
                                engines=types.SimpleNamespace(local=rec), engine_dtype=None,
                                colocation=Colocation(rec, rec, True))
    loop.train_step(run)
    assert log == [
        "generate",
        "engine.sleep(2)", "trainer.onload",
        "update",
        "probe: trainer log-probs",
        "trainer.offload(params=False)", "engine.wake_up(weights)",
        "refit",
        "trainer.offload(params=True)", "engine.wake_up(kv_cache)",
        "probe: engine log-probs",
    ]


def _train(dtype: str, offload: bool) -> dict:
    """Three optimizer steps; with ``offload`` the trainer leaves the device between steps as in a
    colocated run. Returns the weights, and what the offload left on the device."""
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.launch import init_distributed, shutdown
    from megatron_grpo.model.policy import MegatronPolicy
    from tests.model.tiny import model_cfg, parallel_cfg, tiny_hf_config

    torch.Tensor.pin_memory = lambda self: self.clone()  # a host copy; pinning needs a GPU
    par = parallel_cfg(distributed_optimizer=True)
    init_distributed(par, seed=0)
    from megatron_grpo.config import OptimizerConfig

    policy = MegatronPolicy(arch_from_dict(tiny_hf_config(layers=2)), model_cfg(dtype=dtype), par,
                            OptimizerConfig(lr=1e-2, weight_decay=0.1), total_steps=4, seed=3)
    policy.offloads = offload
    tokens = torch.randint(0, 250, (2, 12), generator=torch.Generator().manual_seed(0))
    freed = {}
    for step in range(3):
        policy.onload()
        policy.train_step([{"tokens": tokens}], lambda lp, ent, mb: (-lp[:, :-1].float().mean(), {}))
        policy.offload(params=False)
        policy.offload(params=True)
        if offload and step == 1:
            buffers = policy._offload.buffers
            freed = {"grads": sum(b.grad_data.untyped_storage().size() for b in buffers),
                     "params": sum(b.param_data.untyped_storage().size() for b in buffers)}
    policy.onload()
    weights = {k: v.detach().float().clone() for k, v in policy.hf_tensors()}
    storages = {p.untyped_storage().data_ptr() for p in policy.model[0].parameters()}
    shared = [p.untyped_storage().data_ptr() in storages for g in policy.optimizer.optimizer.param_groups
              for p in g["params"]]
    shutdown()
    return {"weights": weights, "freed": freed, "views": sum(shared), "masters": len(shared) - sum(shared)}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_offloaded_training_equals_resident_training(dtype):
    """fp32: the distributed optimizer's parameters are views of the weights and must stay so (Megatron's
    optimizer offload would bring them back as copies); bf16: fp32 master weights of its own, which move."""
    resident = run_distributed(_train, 1, dtype, False)[0]
    offloaded = run_distributed(_train, 1, dtype, True)[0]
    assert offloaded["freed"] == {"grads": 0, "params": 0}  # the device buffers were really released
    assert offloaded["views"] == resident["views"]  # fp32: still in the weights' storage, no second copy
    assert resident["views"] > 0  # fp32 weights (the torch norms are fp32 under bf16 too)
    assert (resident["masters"] > 0) == (dtype == "bf16")  # fp32 copies of the bf16 weights
    for name, tensor in resident["weights"].items():
        assert torch.equal(tensor, offloaded["weights"][name]), name
