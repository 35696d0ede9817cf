"""Stand-in for ``python -m megatron_grpo`` in the Slurm tests: records what the launcher gave it.

Writes ``$FAKE_OUT/rank<RANK>.json`` (argv and launch environment) and exits with ``$FAKE_TRAIN_RC``.
With ``FAKE_TRAIN_WAIT=1`` it waits for SIGTERM instead, like the trainer saving on a stop request,
and then exits with 75.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
        "SLURM_NODEID", "SLURM_PROCID", "MEGATRON_GRPO_RC_DIR", "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "OMP_NUM_THREADS")


def main() -> int:
    out = Path(os.environ["FAKE_OUT"])
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
    record = {"argv": sys.argv[1:], "env": {k: os.environ.get(k) for k in KEYS}}
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(record))
    if os.environ.get("FAKE_TRAIN_WAIT") == "1":
        deadline = time.monotonic() + 60
        while not stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        return 75 if stopped else 1
    return int(os.environ.get("FAKE_TRAIN_RC", "0"))


if __name__ == "__main__":
    sys.exit(main())
