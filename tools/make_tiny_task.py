"""Write the embedded demo task: ``<bos> a + b = Answer:`` -> the digit (a + b) mod 10.

Every (a, b) pair of single digits appears ``--copies`` times, so an epoch holds several batches and the
shuffled sampler mixes them. ``data_source`` "math" routes the responses to the math reward, which
reads the bare digit through its ``last_number`` fallback. Usage: ``python tools/make_tiny_task.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "megatron_grpo" / "assets" / "tiny" / "train.jsonl"


def rows(copies: int) -> list[dict]:
    pairs = [(a, b) for a in range(10) for b in range(10)]
    return [{"id": i, "problem": f"{a} + {b} = Answer:", "answer": str((a + b) % 10), "data_source": "math"}
            for i, (a, b) in enumerate(pairs * copies)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSONL file to write")
    parser.add_argument("--copies", type=int, default=10, help="copies of each of the 100 problems")
    args = parser.parse_args()
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows(args.copies)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
