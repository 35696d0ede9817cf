#!/bin/bash
# Stand-in for srun in tests: runs the step's command once per task (--nodes x --ntasks-per-node, default one
# per node of the job), all on this host, as background processes with the variables srun sets per task.
# Like srun it forwards TERM/USR1 to the tasks and exits with the highest task exit code.
nodes=${SLURM_JOB_NUM_NODES:-1}
per_node=1
while [[ ${1:-} == -* ]]; do  # srun's own options (always written --opt=value here)
    case $1 in
        --nodes=*) nodes=${1#--nodes=} ;;
        --ntasks-per-node=*) per_node=${1#--ntasks-per-node=} ;;
    esac
    shift
done
tasks=$((nodes * per_node))
pids=()
for ((i = 0; i < tasks; i++)); do
    SLURM_NODEID=$((i / per_node)) SLURM_PROCID=$i SLURM_LOCALID=$((i % per_node)) SLURM_NTASKS=$tasks \
        SLURMD_NODENAME=node$((i / per_node)) "$@" &
    pids+=($!)
done
# shellcheck disable=SC2317  # called from the trap
forward() { kill -s "$1" "${pids[@]}" 2>/dev/null; }
trap 'forward TERM' TERM
trap 'forward USR1' USR1
rc=0
for pid in "${pids[@]}"; do
    while :; do
        code=0
        wait "$pid" || code=$?
        kill -0 "$pid" 2>/dev/null || break
    done
    ((code > rc)) && rc=$code
done
exit "$rc"
