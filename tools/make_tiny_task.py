"""Write the embedded demo task: ``<bos> a + b = Answer:`` -> the digit (a + b) mod 10.

train.jsonl: every (a, b) pair of single digits ``--copies`` times, so an epoch holds several batches
and the shuffled sampler mixes them; eval.jsonl: each of the 100 pairs once (validation set).
``data_source`` "math" routes the responses to the math reward, which reads the bare digit through its
``last_number`` fallback. Usage: ``python tools/make_tiny_task.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "megatron_grpo" / "assets" / "tiny_task"


def rows(copies: int) -> list[dict]:
    pairs = [(a, b) for a in range(10) for b in range(10)]
    return [{"id": i, "problem": f"{a} + {b} = Answer:", "answer": str((a + b) % 10), "data_source": "math"}
            for i, (a, b) in enumerate(pairs * copies)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_DIR, help="directory for train/eval.jsonl")
    parser.add_argument("--copies", type=int, default=10, help="copies of each of the 100 problems in train")
    args = parser.parse_args()
    for name, copies in (("train.jsonl", args.copies), ("eval.jsonl", 1)):
        (args.out_dir / name).write_text("".join(json.dumps(r) + "\n" for r in rows(copies)))
        print(f"wrote {args.out_dir / name}")


if __name__ == "__main__":
    main()
