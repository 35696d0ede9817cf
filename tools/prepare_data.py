"""Convert parquet/JSONL math-problem files into the project's training format, deduplicated.

Training format (docs/data.md): one parquet file with string columns
``prompt`` (the user-turn text; the bare problem unless --template says otherwise), ``ground_truth``,
``data_source`` and ``index`` (the source's id). The trainer reads it like any other input.

Example (rebuilds the 17,398-problem Processed set from the 17,917-row DAPO-Math-17k file)::

    python tools/prepare_data.py shared/data/train/dapo_math_17k.parquet -o data/dapo17k_dedup.parquet
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from megatron_grpo.data import DataError, PromptRecord, apply_template, dedup_records, read_records

TEMPLATES = ("raw", "boxed", "dapo", "as_is")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path,
                   help="source files (.parquet or .jsonl), concatenated in the order given")
    p.add_argument("-o", "--output", type=Path, required=True, help="output parquet file")
    p.add_argument("--template", choices=TEMPLATES, default="raw",
                   help="prompt template baked into the prompt column: raw = bare problem, so the run picks "
                        "the template with data.prompt_template (default: %(default)s)")
    p.add_argument("--dedup", choices=("exact", "whitespace", "none"), default="exact",
                   help="duplicate key: exact problem text, whitespace-collapsed text, or no dedup; "
                        "the first occurrence is kept (default: %(default)s)")
    p.add_argument("--on-bad-rows", choices=("reject", "skip"), default="reject",
                   help="reject: fail listing bad rows by file/row/column; skip: drop and count them "
                        "(default: %(default)s)")
    p.add_argument("--data-source", default=None,
                   help="value of data_source for every row (default: each file's own column, else its stem)")
    p.add_argument("--report", type=Path, default=None,
                   help="also write the counts and conflicting duplicates as JSON to this file")
    return p.parse_args(argv)


def to_table(records: list[PromptRecord], template: str, data_source: str | None) -> pa.Table:
    """The training-format table of ``records``."""
    return pa.table({
        "prompt": pa.array([apply_template(r, template) for r in records], pa.string()),
        "ground_truth": pa.array([r.ground_truth for r in records], pa.string()),
        "data_source": pa.array([data_source or r.data_source for r in records], pa.string()),
        "index": pa.array([r.index for r in records], pa.string()),
    })


def prepare(args: argparse.Namespace) -> dict:
    """Read, dedup and write; returns the report that is printed."""
    records, bad_rows = [], []
    for path in args.inputs:
        recs, bad = read_records(path, args.on_bad_rows)
        records += recs
        bad_rows += bad
    result = dedup_records(records, args.dedup)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_table(result.kept, args.template, args.data_source), args.output)
    return {
        "inputs": [str(p) for p in args.inputs], "output": str(args.output),
        "rows_read": len(records) + len(bad_rows), "bad_rows_skipped": len(bad_rows),
        "duplicates_dropped": result.dropped, "duplicated_problems": result.duplicated_problems,
        "conflicting_duplicates": [
            {"problem": c.problem[:120], "ground_truths": c.ground_truths, "indices": c.indices}
            for c in result.conflicts
        ],
        "rows_written": len(result.kept),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = prepare(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if args.report is not None:
        args.report.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
