"""Process placement: who am I, who are my peers, and the Megatron parallel groups.

Works as a single process, under ``torchrun`` (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT) and
under ``srun`` with one task per GPU (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID + MASTER_ADDR/PORT).
torchrun variables win when both are present, since torchrun re-exports them per worker.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from megatron_grpo import platform
from megatron_grpo.config import ConfigError, ParallelConfig


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    source: str  # "torchrun", "slurm" or "single"


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise ConfigError(f"environment variable {key}={env[key]!r} is not an integer") from None


def dist_env(env: Mapping[str, str] | None = None) -> DistEnv:
    """Read the launch environment and check it is consistent."""
    env = os.environ if env is None else env
    addr = env.get("MASTER_ADDR", "127.0.0.1")
    if "RANK" in env or "WORLD_SIZE" in env:
        rank, world, local = _torchrun_ranks(env)
        source = "torchrun"
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        rank, world = _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS")
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
        source = "slurm"
        if world > 1 and "MASTER_ADDR" not in env:
            raise ConfigError("Slurm launch with several tasks needs MASTER_ADDR (see slurm/env.sh)")
    else:
        return DistEnv(0, 1, 0, addr, free_port(), "single")
    port = _int(env, "MASTER_PORT") if "MASTER_PORT" in env else 29500
    if not 0 < port < 65536:
        raise ConfigError(f"MASTER_PORT={port} is not a TCP port (1-65535)")
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"{source} environment inconsistent: rank {rank} not in [0, world size {world})")
    if not 0 <= local <= rank:
        raise ConfigError(f"{source} environment inconsistent: local rank {local} > rank {rank}")
    return DistEnv(rank, world, local, addr, port, source)


def _torchrun_ranks(env: Mapping[str, str]) -> tuple[int, int, int]:
    """(rank, world, local rank) from torchrun's variables, checked against each other and against srun."""
    missing = [k for k in ("RANK", "WORLD_SIZE") if k not in env]
    if missing:
        raise ConfigError(f"torchrun environment incomplete: {missing[0]} is not set")
    rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
    if "LOCAL_RANK" not in env and world > 1:
        # Defaulting to RANK would pick GPU 9 on the second node of a 2 x 8 job.
        raise ConfigError("torchrun environment incomplete: LOCAL_RANK is not set (world size > 1)")
    local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0
    if "LOCAL_WORLD_SIZE" in env and not 0 <= local < _int(env, "LOCAL_WORLD_SIZE") <= world:
        raise ConfigError(f"torchrun environment inconsistent: LOCAL_RANK={local}, "
                          f"LOCAL_WORLD_SIZE={env['LOCAL_WORLD_SIZE']}, WORLD_SIZE={world}")
    # Inside an srun step, each task is one torchrun agent: the agents torchrun counts must be the tasks.
    if {"SLURM_STEP_ID", "SLURM_NTASKS", "GROUP_WORLD_SIZE"} <= env.keys():
        tasks, agents = _int(env, "SLURM_NTASKS"), _int(env, "GROUP_WORLD_SIZE")
        if tasks != agents:
            raise ConfigError(f"srun started {tasks} tasks but torchrun expects {agents} nodes: run one torchrun "
                              "per node (srun --ntasks-per-node=1, see slurm/train.sbatch)")
    return rank, world, local


def free_port() -> int:
    """A TCP port free on this host now (another process may take it before it is bound)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(par: ParallelConfig, seed: int, env: DistEnv | None = None) -> DistEnv:
    """Start torch.distributed and Megatron's parallel groups; seed every RNG. On the ``meta`` platform
    (set up by the caller) the process group is torch's fake one: this process acts as ``env.rank``."""
    env = env or dist_env()
    platform.setup_platform(local_rank=env.local_rank)
    if not dist.is_initialized():
        where = {"init_method": f"tcp://{env.master_addr}:{env.master_port}"}
        if platform.kind() == "meta":
            from torch.testing._internal.distributed.fake_pg import FakeStore

            where = {"store": FakeStore()}
        dist.init_process_group(backend=platform.dist_backend(par.backend), rank=env.rank,
                                world_size=env.world_size, timeout=timedelta(minutes=30), **where)
    if env.world_size % (par.tensor * par.pipeline):
        raise ConfigError(
            f"parallel: world size {env.world_size} is not divisible by tensor x pipeline = {par.tensor * par.pipeline}"
        )
    experts = par.expert_tensor_size * par.expert * par.pipeline
    if env.world_size % experts:
        raise ConfigError(f"parallel: world size {env.world_size} is not divisible by expert_tensor x expert x "
                          f"pipeline = {experts}")
    from megatron.core import parallel_state as ps

    if not ps.model_parallel_is_initialized():
        ps.initialize_model_parallel(
            tensor_model_parallel_size=par.tensor,
            pipeline_model_parallel_size=par.pipeline,
            virtual_pipeline_model_parallel_size=par.virtual_pipeline,
            expert_model_parallel_size=par.expert,
            expert_tensor_parallel_size=par.expert_tensor_size,
        )
    seed_everything(seed)
    return env


def seed_everything(seed: int) -> None:
    """Same seed on every rank: Megatron's CPU init builds full weights then slices, so TP ranks agree."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if platform.has_cuda():
        from megatron.core import tensor_parallel

        tensor_parallel.model_parallel_cuda_manual_seed(seed)


def shutdown() -> None:
    from megatron.core import parallel_state as ps

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
