#!/bin/bash
# One rollout engine of a disaggregated job (train.sbatch with ROLLOUT_NODES > 0): task SLURM_LOCALID of its
# node drives GPUs [SLURM_LOCALID * ENGINE_TP, +ENGINE_TP) and connects to trainer rank 0 once that rank has
# published its address. The engine exits when the trainer closes the connection (done, or stopping).
# Usage (from train.sbatch): srun ... bash slurm/engine.sh ADDRESS_FILE PROGRAM...
set -euo pipefail
address_file=$1
shift
tp=${ENGINE_TP:?ENGINE_TP: GPUs per engine}
first=$((${SLURM_LOCALID:-0} * tp))
CUDA_VISIBLE_DEVICES=$(seq -s, "$first" $((first + tp - 1)))
export CUDA_VISIBLE_DEVICES
exec "$@" engine --connect-file "$address_file" --index "${SLURM_PROCID:-0}"
