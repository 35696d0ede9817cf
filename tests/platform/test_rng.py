"""platform.rng_state: checkpoints carry every RNG a step draws from, the CUDA ones where CUDA exists.

No GPU here: the CUDA generator and Megatron's tracker are replaced by recorders, so what is checked is
that the trainer's checkpoint state takes them and gives them back, bit for bit."""

from __future__ import annotations

import base64
import pickle
import types

import torch

from megatron_grpo import platform
from megatron_grpo.trainer.setup import restore_trainer_state, trainer_state


class _Sampler:
    def __init__(self):
        self.state = {"epoch": 0, "position": 0}

    def state_dict(self):
        return dict(self.state)

    def load_state_dict(self, state):
        self.state = dict(state)


def _run(step=0):
    sampler = _Sampler()
    return types.SimpleNamespace(step=step, sampler=sampler, nonfinite_streak=0,
                                 rollouts=types.SimpleNamespace(sampler_state=sampler.state_dict))


def test_cuda_generator_and_tracker_states_round_trip(monkeypatch):
    from megatron.core import tensor_parallel

    device_rng = {"state": torch.arange(16, dtype=torch.uint8)}
    tracker = types.SimpleNamespace(states={"model-parallel-rng": torch.full((8,), 7, dtype=torch.uint8)})
    tracker.get_states = lambda: dict(tracker.states)
    tracker.set_states = lambda s: tracker.states.update(s)
    monkeypatch.setattr(platform, "_kind", "cuda")
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: device_rng["state"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s: device_rng.update(state=s.clone()))
    monkeypatch.setattr(tensor_parallel, "get_cuda_rng_tracker", lambda: tracker)

    saved = trainer_state(_run(step=5))
    device_rng["state"] = torch.zeros(16, dtype=torch.uint8)  # the training run moves on
    tracker.states["model-parallel-rng"] = torch.zeros(8, dtype=torch.uint8)
    cpu_before = torch.get_rng_state()
    torch.rand(3)
    restored = _run()
    restore_trainer_state(restored, saved)
    assert restored.step == 5
    assert torch.equal(device_rng["state"], torch.arange(16, dtype=torch.uint8))
    assert torch.equal(tracker.states["model-parallel-rng"], torch.full((8,), 7, dtype=torch.uint8))
    assert torch.equal(torch.get_rng_state(), cpu_before)


def test_cpu_state_has_no_cuda_part_and_old_checkpoints_still_load():
    state = platform.rng_state()
    assert set(state) == {"cpu"}
    old = trainer_state(_run(step=2))
    rng = pickle.loads(base64.b64decode(old["rng"]))
    old["rng"] = base64.b64encode(pickle.dumps((rng["torch"]["cpu"], rng["numpy"], rng["python"]))).decode()
    torch.rand(3)
    restored = _run()
    restore_trainer_state(restored, old)
    assert torch.equal(torch.get_rng_state(), state["cpu"])
