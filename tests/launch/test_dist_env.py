"""launch.dist_env on crafted environments: torchrun, srun one-task-per-GPU, single process, and the
inconsistent combinations that must fail with a message naming the variable."""

from __future__ import annotations

import pytest

from megatron_grpo.config import ConfigError
from megatron_grpo.launch import dist_env

TORCHRUN = {"RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "8",
            "MASTER_ADDR": "node0", "MASTER_PORT": "29511", "GROUP_WORLD_SIZE": "2"}
SRUN = {"SLURM_PROCID": "9", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "MASTER_ADDR": "node0", "MASTER_PORT": "29511"}


def test_torchrun():
    e = dist_env(TORCHRUN)
    assert (e.rank, e.world_size, e.local_rank, e.master_addr, e.master_port, e.source) == (
        9, 16, 1, "node0", 29511, "torchrun")


def test_torchrun_under_srun_one_task_per_node():
    """What every worker of slurm/train.sbatch sees: torchrun's variables win over the task's."""
    env = {**TORCHRUN, "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}
    e = dist_env(env)
    assert (e.rank, e.world_size, e.local_rank, e.source) == (9, 16, 1, "torchrun")


def test_srun_one_task_per_gpu():
    e = dist_env(SRUN)
    assert (e.rank, e.world_size, e.local_rank, e.source) == (9, 16, 1, "slurm")


def test_single_process():
    e = dist_env({})
    assert (e.rank, e.world_size, e.local_rank, e.source) == (0, 1, 0, "single")
    assert 0 < e.master_port < 65536


def test_single_torchrun_worker_without_local_rank():
    assert dist_env({"RANK": "0", "WORLD_SIZE": "1"}).local_rank == 0


@pytest.mark.parametrize(("env", "message"), [
    ({"RANK": "0"}, "WORLD_SIZE is not set"),
    ({"WORLD_SIZE": "2"}, "RANK is not set"),
    ({"RANK": "0", "WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
    ({**TORCHRUN, "RANK": "16"}, "rank 16 not in [0, world size 16)"),
    ({**TORCHRUN, "RANK": "-1"}, "rank -1 not in"),
    ({**TORCHRUN, "WORLD_SIZE": "0", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "0"}, "LOCAL_WORLD_SIZE"),
    ({k: v for k, v in TORCHRUN.items() if k != "LOCAL_RANK"}, "LOCAL_RANK is not set"),
    ({**TORCHRUN, "LOCAL_RANK": "8"}, "LOCAL_RANK=8, LOCAL_WORLD_SIZE=8"),
    ({**TORCHRUN, "LOCAL_WORLD_SIZE": "32"}, "LOCAL_WORLD_SIZE=32, WORLD_SIZE=16"),
    ({**TORCHRUN, "RANK": "0", "LOCAL_RANK": "3"}, "local rank 3 > rank 0"),
    ({**TORCHRUN, "MASTER_PORT": "70000"}, "MASTER_PORT=70000 is not a TCP port"),
    ({**TORCHRUN, "MASTER_PORT": "x"}, "MASTER_PORT='x' is not an integer"),
    ({**TORCHRUN, "SLURM_STEP_ID": "0", "SLURM_NTASKS": "16"}, "srun started 16 tasks but torchrun expects 2 nodes"),
    ({k: v for k, v in SRUN.items() if k != "MASTER_ADDR"}, "needs MASTER_ADDR"),
    ({**SRUN, "SLURM_PROCID": "16"}, "slurm environment inconsistent: rank 16"),
    ({**SRUN, "SLURM_LOCALID": "10"}, "local rank 10 > rank 9"),
    ({**SRUN, "SLURM_NTASKS": "0", "SLURM_PROCID": "0"}, "rank 0 not in [0, world size 0)"),
])
def test_inconsistent_environments_fail_clearly(env, message):
    with pytest.raises(ConfigError) as err:
        dist_env(env)
    assert message in str(err.value)
