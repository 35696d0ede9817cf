# Cluster knobs for slurm/*.sbatch. Sourced by the batch scripts, never run on its own.
# Every knob keeps a value already set in the environment, so `VAR=x sbatch ...` overrides it.
# shellcheck shell=bash

# ---- user hook: software environment ------------------------------------------------------------
# Load modules / activate the Python environment here, e.g.
#   module load cuda/12.4 nccl
#   source "$HOME/venvs/megatron-grpo/bin/activate"
# With a container (pyxis/enroot), put the image in SRUN_ARGS below instead.

# Extra srun flags for every step, e.g. (pyxis)
#   SRUN_ARGS=(--container-image=/images/megatron-grpo.sqsh --container-mounts="$PWD:$PWD" --container-workdir="$PWD")
[[ -v SRUN_ARGS ]] || SRUN_ARGS=()

# ---- network -------------------------------------------------------------------------------------
# Interface NCCL bootstraps on and gloo talks over (e.g. ib0, eth0, or ^lo,docker0 to exclude).
# Unset = NCCL/gloo pick one; set it when nodes have several interfaces and the pick is wrong.
# export NCCL_SOCKET_IFNAME=ib0
# export GLOO_SOCKET_IFNAME=ib0

# Rendezvous port on the first node; derived from the job id so two jobs sharing a node do not collide.
export MASTER_PORT=${MASTER_PORT:-$((29500 + ${SLURM_JOB_ID:-0} % 1000))}
# Disaggregated jobs (ROLLOUT_NODES > 0): the port trainer rank 0 listens on for its engines. Their
# weight-transfer group meets on a free port of the same node, which the trainer tells them.
export ENGINE_PORT=${ENGINE_PORT:-$((MASTER_PORT + 1000))}

# ---- processes -----------------------------------------------------------------------------------
# Training processes per node (one per GPU); Slurm's count of this node's GPUs when it sets one.
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}

# CPU threads per training process; more only oversubscribes the node's cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}

# Megatron's tensor-parallel communication overlap needs kernels queued in launch order.
export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-1}

# Logs appear as they are written, not when a buffer fills.
export PYTHONUNBUFFERED=1

# The pre-emption warning's lead, `#SBATCH --signal=B:USR1@600` in train.sbatch, must cover one step plus
# a save (see `plan`): the trainers finish the step they are in before they save.

# ---- commands (a container or a site install may name others) ----------------------------------
SRUN=${SRUN:-srun}
SCONTROL=${SCONTROL:-scontrol}
TORCHRUN=${TORCHRUN:-torchrun}
# The program each rank runs; its first argument is the sub-command (train, eval, export).
MEGATRON_GRPO_CMD=${MEGATRON_GRPO_CMD:-python -m megatron_grpo}
