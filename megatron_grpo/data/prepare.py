"""``megatron-grpo data prepare`` and ``data convert``: training and eval files in the project's formats.

``prepare`` writes the reference job's datasets (DAPO-Math-17k raw and processed, AIME 2024/2025, AMC 2023
and the 83-problem AIMO AMC file) from named Hugging Face datasets at pinned revisions, through the
``datasets`` library, or from local copies with ``--from DIR``. ``convert`` turns a user's own
parquet/JSONL files into the training format. A dataset is one ``Source`` in ``SOURCES``; adding one
changes no other code.

Formats (docs/data.md): training parquet with string columns ``prompt`` (the bare problem: the run picks
the template with ``data.prompt_template``), ``ground_truth``, ``data_source``, ``index``; eval JSON Lines
``{"id", "problem", "answer", "source"}`` with canonical answers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from megatron_grpo.data.dedup import dedup_records
from megatron_grpo.data.readers import (
    Columns,
    columns_records,
    read_columns,
    read_records,
    resolve_columns,
    table_columns,
)
from megatron_grpo.data.records import DataError, PromptRecord
from megatron_grpo.data.templates import apply_template

log = logging.getLogger(__name__)

TEMPLATES = ("raw", "boxed", "dapo", "as_is")


@dataclass(frozen=True)
class HubDataset:
    """A Hugging Face dataset at a pinned revision: what ``datasets.load_dataset`` is called with."""

    repo: str
    revision: str
    split: str
    config: str | None = None


@dataclass(frozen=True)
class Source:
    """One dataset ``prepare`` writes: where it comes from, and where it goes under the output directory."""

    name: str
    kind: Literal["train", "eval"]
    hub: HubDataset
    local: str                  # its file under ``--from DIR`` (the layout of an offline mirror)
    output: str                 # path under ``--out``
    rows: int                   # rows expected at the pinned revision; a different count is warned about
    hub_rows: Callable[[Columns], list[int]] | None = None   # rows of the Hub file that belong to it
    dedup_by_index: bool = False   # the Hub file repeats each problem (DAPO-Math-17k: ~100 copies)


def _amc_year(year: int) -> Callable[[Columns], list[int]]:
    def rows(columns: Columns) -> list[int]:
        return [i for i, url in enumerate(columns.get("url", [])) if f"{year}_AMC" in (url or "")]
    return rows


# Revisions: the Hub commit each dataset was checked at (see docs/data.md for the provenance of each).
_DAPO = HubDataset("BytedTsinghua-SIA/DAPO-Math-17k", "65877096c24ffa7abc4e4fa5edb95cf3413a5674", "train")
_DAPO_PROCESSED = HubDataset("open-r1/DAPO-Math-17k-Processed", "31dd309567e3da778038cc87d868b6097a3ccf68",
                             "train", config="all")
_AIME24 = HubDataset("HuggingFaceH4/aime_2024", "2fe88a2f1091d5048c0f36abc874fb997b3dd99a", "train")
_AIME25 = HubDataset("math-ai/aime25", "563bb8404243c5f09de6ec262f2db674fe5bce9b", "test")
_AIMO_AMC = HubDataset("AI-MO/aimo-validation-amc", "69d78a4a2c840e82d69af6bc742bda09005f6316", "train")

SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("dapo17k", "train", _DAPO, "train/dapo_math_17k.parquet", "train/dapo_math_17k.parquet", 17917,
           dedup_by_index=True),
    Source("dapo17k_processed", "train", _DAPO_PROCESSED, "train/dapo_math_17k_processed_dedup17398.parquet",
           "train/dapo_math_17k_processed.parquet", 17398),
    Source("aime24", "eval", _AIME24, "eval/aime24.jsonl", "eval/aime24.jsonl", 30),
    Source("aime25", "eval", _AIME25, "eval/aime25.jsonl", "eval/aime25.jsonl", 30),
    Source("amc23", "eval", _AIMO_AMC, "eval/amc23.jsonl", "eval/amc23.jsonl", 40, hub_rows=_amc_year(2023)),
    Source("amc83", "eval", _AIMO_AMC, "eval/extra/amc_aimo_val83.jsonl", "eval/amc83.jsonl", 83),
)}


def hub_columns(hub: HubDataset) -> Columns:
    """The one seam to the Hub: the dataset's columns, loaded by ``datasets`` (its cache and HF_HUB_OFFLINE
    apply as usual)."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{hub.repo}: loading from the Hub needs the 'datasets' package "
                        "(pip install 'megatron-grpo[data]'), or pass --from DIR with local copies") from None
    dataset = datasets.load_dataset(hub.repo, hub.config, split=hub.split, revision=hub.revision)
    return table_columns(dataset.with_format("arrow")[:])


def canonical_answer(value: Any) -> Any:
    """An eval answer as the eval files hold it: integers without leading zeros or ``.0`` (AIMO's AMC file
    stores 142.0), a trailing degree sign dropped; anything else unchanged."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        text = re.sub(r"\^\{?\\circ\}?$", "", value.strip())
        if re.fullmatch(r"-?\d+(\.0+)?", text):
            return str(int(float(text))) if "." in text else str(int(text))
        return text
    return value


def _select(columns: Columns, rows: list[int]) -> Columns:
    return {name: [values[i] for i in rows] for name, values in columns.items()}


def _source_label(columns: Columns, record: PromptRecord, name: str) -> str:
    """The eval row's ``source``: the file's own, else the competition and problem from an AoPS url."""
    if columns.get("source") and columns["source"][record.row]:
        return str(columns["source"][record.row])
    url = (columns.get("url") or [None] * (record.row + 1))[record.row]
    if url:
        page = "/".join(url.rstrip("/").split("/")[-2:])       # 2024_AIME_I_Problems/Problem_10
        return page.replace("_Problems/Problem_", " Problem ").replace("_", " ")
    return f"{name} {record.index}"


def _first_per_index(records: list[PromptRecord]) -> list[PromptRecord]:
    first: dict[str, PromptRecord] = {}
    for r in records:
        first.setdefault(r.index, r)
    return list(first.values())


def load_source(source: Source, from_dir: Path | None) -> tuple[list[PromptRecord], Columns, str]:
    """Records of one dataset, the columns they came from, and where from (a file, or repo@revision)."""
    if from_dir is not None:
        path = from_dir / source.local
        if not path.is_file():
            raise DataError(f"{path}: not found; --from expects {source.name} at {source.local} under {from_dir}")
        columns, origin = read_columns(path), str(path)
    else:
        columns, origin = hub_columns(source.hub), f"{source.hub.repo}@{source.hub.revision}"
        if source.hub_rows is not None:
            columns = _select(columns, source.hub_rows(columns))
    if source.kind == "eval":
        truth = resolve_columns(columns, origin)["ground_truth"]
        columns[truth] = [canonical_answer(v) for v in columns[truth]]
    records, _ = columns_records(columns, origin, "reject", source.name)
    if source.dedup_by_index:
        records = _first_per_index(records)
    if len(records) != source.rows:
        log.warning("%s: %d rows, expected %d at %s", source.name, len(records), source.rows, origin)
    return records, columns, origin


def train_table(records: list[PromptRecord], template: str = "raw", data_source: str | None = None) -> pa.Table:
    """The training-format table of ``records``."""
    return pa.table({
        "prompt": pa.array([apply_template(r, template) for r in records], pa.string()),
        "ground_truth": pa.array([r.ground_truth for r in records], pa.string()),
        "data_source": pa.array([data_source or r.data_source for r in records], pa.string()),
        "index": pa.array([r.index for r in records], pa.string()),
    })


def eval_lines(records: list[PromptRecord], columns: Columns, name: str) -> str:
    rows = [{"id": int(r.index) if r.index.lstrip("-").isdigit() else r.index, "problem": r.problem.strip(),
             "answer": r.ground_truth, "source": _source_label(columns, r, name)} for r in records]
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _publish(path: Path, write: Callable[[Path], None]) -> str:
    """Write through a temporary file and rename, so a killed run never leaves half a file; the sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    os.replace(tmp, path)
    return digest


def prepare(out: Path, from_dir: Path | None = None, only: list[str] | None = None) -> dict:
    """Write each chosen dataset under ``out``, and ``out/prepare.json`` saying where each came from."""
    unknown = sorted(set(only or ()) - set(SOURCES))
    if unknown:
        raise DataError(f"unknown dataset(s) {unknown}; known: {sorted(SOURCES)}")
    report = {}
    for source in (SOURCES[n] for n in (only or SOURCES)):
        records, columns, origin = load_source(source, from_dir)
        if source.kind == "train":
            digest = _publish(out / source.output, lambda p, r=records: pq.write_table(train_table(r), p))
        else:
            text = eval_lines(records, columns, source.name)
            digest = _publish(out / source.output, lambda p, t=text: p.write_text(t, encoding="utf-8"))
        report[source.name] = {"file": source.output, "rows": len(records), "expected_rows": source.rows,
                               "from": origin, "sha256": digest}
        log.info("%s: %d rows from %s -> %s", source.name, len(records), origin, out / source.output)
    manifest = out / "prepare.json"
    previous = json.loads(manifest.read_text()) if manifest.is_file() else {}
    _publish(manifest, lambda p: p.write_text(json.dumps({**previous, **report}, indent=2) + "\n"))
    return report


def convert(inputs: list[Path], output: Path, template: str = "raw", dedup: str = "exact",
            on_bad_rows: Literal["reject", "skip"] = "reject", data_source: str | None = None) -> dict:
    """A user's files as one deduplicated training parquet; returns the counts and conflicting duplicates."""
    records, bad_rows = [], []
    for path in inputs:
        recs, bad = read_records(path, on_bad_rows)
        records += recs
        bad_rows += bad
    result = dedup_records(records, dedup)
    _publish(output, lambda p: pq.write_table(train_table(result.kept, template, data_source), p))
    return {
        "inputs": [str(p) for p in inputs], "output": str(output),
        "rows_read": len(records) + len(bad_rows), "bad_rows_skipped": len(bad_rows),
        "duplicates_dropped": result.dropped, "duplicated_problems": result.duplicated_problems,
        "conflicting_duplicates": [
            {"problem": c.problem[:120], "ground_truths": c.ground_truths, "indices": c.indices}
            for c in result.conflicts
        ],
        "rows_written": len(result.kept),
    }


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True)
    prep = sub.add_parser("prepare", help="the reference job's datasets, from the Hub at pinned revisions "
                                          "or from local copies (--from)")
    prep.add_argument("--out", type=Path, default=Path("data"), help="output directory (default: %(default)s)")
    prep.add_argument("--from", dest="from_dir", type=Path, default=None,
                      help="read local copies instead of the Hub: " + ", ".join(
                          f"{s.name}={s.local}" for s in SOURCES.values()))
    prep.add_argument("--only", nargs="+", default=None, choices=sorted(SOURCES), metavar="NAME",
                      help=f"a subset of: {', '.join(SOURCES)}")
    prep.set_defaults(func=_run_prepare)

    conv = sub.add_parser("convert", help="your own parquet/JSONL problem files -> one deduplicated training file")
    conv.add_argument("inputs", nargs="+", type=Path, help="source files (.parquet or .jsonl), in this order")
    conv.add_argument("-o", "--output", type=Path, required=True, help="output parquet file")
    conv.add_argument("--template", choices=TEMPLATES, default="raw",
                      help="template baked into the prompt column; raw = bare problem, so the run picks it "
                           "with data.prompt_template (default: %(default)s)")
    conv.add_argument("--dedup", choices=("exact", "whitespace", "none"), default="exact",
                      help="duplicate key: exact problem text, whitespace-collapsed text, or none; the first "
                           "occurrence is kept (default: %(default)s)")
    conv.add_argument("--on-bad-rows", choices=("reject", "skip"), default="reject",
                      help="reject: fail listing bad rows by file/row/column; skip: drop and count them")
    conv.add_argument("--data-source", default=None,
                      help="data_source of every row (default: each file's own column, else its stem)")
    conv.add_argument("--report", type=Path, default=None, help="also write the report as JSON to this file")
    conv.set_defaults(func=_run_convert)


def _run_prepare(args: argparse.Namespace) -> int:
    report = prepare(args.out, args.from_dir, args.only)
    print(json.dumps(report, indent=2))
    return 0


def _run_convert(args: argparse.Namespace) -> int:
    report = convert(args.inputs, args.output, args.template, args.dedup, args.on_bad_rows, args.data_source)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if args.report is not None:
        args.report.write_text(text + "\n")
    print(text)
    return 0
