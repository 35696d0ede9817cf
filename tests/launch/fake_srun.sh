#!/bin/bash
# Stand-in for srun in tests: runs the step's command once per "node" of the job, all on this host, as
# background processes with the variables srun sets per task. Like srun it forwards TERM/USR1 to the
# tasks and exits with the highest task exit code.
nodes=${SLURM_JOB_NUM_NODES:-1}
while [[ ${1:-} == -* ]]; do shift; done  # srun's own options (always written --opt=value here)
pids=()
for ((i = 0; i < nodes; i++)); do
    SLURM_NODEID=$i SLURM_PROCID=$i SLURM_LOCALID=0 SLURM_NTASKS=$nodes SLURMD_NODENAME=node$i "$@" &
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
