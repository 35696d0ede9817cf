"""The stand-in accelerator's rules (platform.standin, platform.patches): as strict as NCCL about devices,
explicit about what a data-less world cannot know. Runs in a spawned process (the platform is per process)."""

from __future__ import annotations

import pytest

from tests.dist import run_distributed


def _probe_world() -> dict:
    import torch
    import torch.distributed as dist

    from megatron_grpo import platform
    from megatron_grpo.config import ParallelConfig
    from megatron_grpo.families import arch_from_dict
    from megatron_grpo.launch import DistEnv, init_distributed, shutdown
    from megatron_grpo.model.builder import build_model
    from tests.model.tiny import model_cfg, tiny_hf_config

    def error(fn) -> str:
        try:
            fn()
        except Exception as exc:  # the message is what the test checks
            return f"{type(exc).__name__}: {exc}"
        return ""

    platform.setup_platform("meta", local_rank=3)
    par = ParallelConfig(tensor=2)
    init_distributed(par, seed=0, env=DistEnv(3, 8, 3, "", 0, "standin"))
    out = {"device": str(platform.device()), "backend": platform.dist_backend()}
    out["host_all_reduce"] = error(lambda: dist.all_reduce(torch.ones(2)))
    out["meta_all_reduce"] = error(lambda: dist.all_reduce(torch.ones(2, device="meta")))
    gathered = [None] * 8
    dist.all_gather_object(gathered, {"rank": 3})
    out["gathered"] = gathered
    box = [{"mine": True}]
    dist.broadcast_object_list(box, src=0)
    out["broadcast"] = box
    out["host_read"] = error(lambda: torch.ones(1, device="meta").item())
    out["tolist"] = error(lambda: torch.ones(2, device="meta").tolist())
    from megatron_grpo.trainer.signals import StopRequest

    out["stop_agreed"] = error(lambda: StopRequest().agreed())  # the trainer's stop flag is all-reduced
    out["to_host"] = platform.to_host(torch.ones(2, device="meta")).tolist()
    arch = arch_from_dict(tiny_hf_config(layers=2))
    (model,) = build_model(arch, model_cfg(), par)
    out["param_device"] = str(next(model.parameters()).device)
    tokens = torch.zeros(1, 8, dtype=torch.long)
    out["host_tokens"] = error(lambda: model(tokens, torch.arange(8)[None], None))
    out["meta_tokens"] = error(lambda: model(tokens.to("meta"), torch.arange(8, device="meta")[None], None))
    shutdown()
    return out


@pytest.fixture(scope="module")
def world() -> dict:
    return run_distributed(_probe_world, 1)[0]


def test_rank_acts_on_the_meta_device_over_the_fake_group(world):
    assert world["device"] == "meta"
    assert "fake" in world["backend"]


def test_host_tensor_in_a_collective_fails_as_on_nccl(world):
    assert world["host_all_reduce"].startswith("DeviceError: c10d.allreduce_: a cpu tensor (2,)")
    assert world["meta_all_reduce"] == ""


def test_object_collectives_read_peers_as_copies_of_this_rank(world):
    assert world["gathered"] == [{"rank": 3}] * 8
    assert world["broadcast"] == [{"mine": True}]  # not the source: keeps its own objects


def test_host_reads_are_refused_outside_the_boundary(world):
    assert "reads a device tensor (1,) to the host (aten._local_scalar_dense)" in world["host_read"]
    assert "test_standin.py" in world["host_read"]  # names the caller
    assert "reads a device tensor (2,) to the host (aten._to_copy)" in world["tolist"]
    assert world["to_host"] == [0.0, 0.0]


def test_the_stop_flag_crosses_ranks_on_the_device(world):
    assert world["stop_agreed"] == ""


def test_model_lives_on_the_device_and_refuses_host_inputs(world):
    assert world["param_device"] == "meta"
    assert world["host_tokens"] != ""
    assert world["meta_tokens"] == ""
