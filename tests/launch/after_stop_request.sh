#!/bin/bash
# Test scaffolding for the pre-emption tests: the trainer of each of a job's first $STOPPED_STARTS starts
# (default 1) begins only once that start has been asked to stop (slurm/train.sbatch creates
# $MEGATRON_GRPO_STOP_FILE), so the request always lands mid-run, however fast the steps are. Later
# starts run at once.
# Usage: MEGATRON_GRPO_CMD="bash tests/launch/after_stop_request.sh python -m megatron_grpo"
if (( ${SLURM_RESTART_COUNT:-0} < ${STOPPED_STARTS:-1} )); then
    for _ in $(seq 900); do
        [[ -e ${MEGATRON_GRPO_STOP_FILE:?} ]] && break
        sleep 0.2
    done
fi
exec "$@"
