#!/bin/bash
# Stand-in for scontrol in tests: every node of the job is this host; requeue requests are logged.
case "$1 $2" in
    "show hostnames") for ((i = 0; i < ${SLURM_JOB_NUM_NODES:-1}; i++)); do echo localhost; done ;;
    "requeue "*) echo "requeue $2" >> "$FAKE_SCONTROL_LOG" ;;
    *) echo "fake scontrol: unsupported: $*" >&2; exit 1 ;;
esac
