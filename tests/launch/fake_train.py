"""Stand-in for ``python -m megatron_grpo`` in the launch-only Slurm tests: records what the launcher gave it.

Writes ``$FAKE_OUT/rank<RANK>.json`` (argv and launch environment) and exits with ``$FAKE_TRAIN_RC``.
"""

import json
import os
import sys
from pathlib import Path

KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
        "SLURM_NODEID", "SLURM_PROCID", "SLURMD_NODENAME", "MEGATRON_GRPO_RC_DIR", "OMP_NUM_THREADS")


def main() -> int:
    record = {"argv": sys.argv[1:], "env": {k: os.environ.get(k) for k in KEYS}}
    (Path(os.environ["FAKE_OUT"]) / f"rank{os.environ['RANK']}.json").write_text(json.dumps(record))
    return int(os.environ.get("FAKE_TRAIN_RC", "0"))


if __name__ == "__main__":
    sys.exit(main())
