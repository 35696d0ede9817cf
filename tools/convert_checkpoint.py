"""Convert checkpoints: ``mcore-to-hf`` (Megatron torch_dist -> HF) and ``hf-to-mcore`` (HF -> torch_dist).

    python tools/convert_checkpoint.py mcore-to-hf --ckpt runs/x/checkpoints --hf-config cfg.json --out hf/
    python tools/convert_checkpoint.py hf-to-mcore --hf Qwen3-4B/ --out ckpt/ --tp 2 --pp 2

Same as ``megatron-grpo convert ...``; see docs/checkpoints.md.
"""

import sys

from megatron_grpo.convert.cli import main

if __name__ == "__main__":  # conversion spawns processes: the guard is required
    sys.exit(main())
