#!/bin/bash
# One rank under torchrun: run the command and record its exit code for the batch script.
# torchrun reports any failed worker as exit code 1, which would hide the trainer's 75 ("checkpoint
# saved after a stop request, requeue me"); so the code goes to $MEGATRON_GRPO_RC_DIR/rank-$RANK, and
# a 75 is reported to torchrun as a clean exit, so that srun does not kill ranks still finishing their save.
# torchrun signals the whole process group: the trainer gets SIGTERM directly, this shell outlives it.
trap : TERM USR1 INT
rc=0
"$@" || rc=$?
if [[ -n ${MEGATRON_GRPO_RC_DIR:-} ]]; then
    echo "$rc" > "$MEGATRON_GRPO_RC_DIR/rank-${RANK:-0}"
fi
if ((rc == 75)); then
    exit 0
fi
exit "$rc"
