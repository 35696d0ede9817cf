"""Read parquet/JSONL prompt files into ``PromptRecord``s, reporting bad rows by file, row and column.

Both formats are first turned into flat columns (``{"reward_model.ground_truth": [...], ...}``); one
table of candidate column names then covers DAPO-Math-17k (chat-message prompts), verl-style files,
the project's training format (``data prepare``/``data convert``) and the eval JSONL sets (problem/answer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from megatron_grpo.data.records import BadRow, DataError, PromptRecord
from megatron_grpo.data.templates import extract_problem

Columns = dict[str, list[Any]]  # flat column name -> one value per row

# field -> accepted column names, first present wins
FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "problem"),
    "ground_truth": ("reward_model.ground_truth", "ground_truth", "answer"),
    "data_source": ("data_source",),
    "index": ("extra_info.index", "index", "id"),
}
REQUIRED = ("prompt", "ground_truth")
MAX_LISTED_BAD_ROWS = 10


def read_columns(path: Path) -> Columns:
    """Flat columns of a ``.parquet`` or ``.jsonl`` file; nested structs become dotted names."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix == ".parquet":
        columns = _parquet_columns(path)
    elif path.suffix in (".jsonl", ".json"):
        columns = _jsonl_columns(path)
    else:
        raise DataError(f"{path}: unsupported file type '{path.suffix}' (expected .parquet or .jsonl)")
    if not any(columns.values()):
        raise DataError(f"{path}: no rows (an empty file)")
    return columns


def _parquet_columns(path: Path) -> Columns:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    return table_columns(table)


def table_columns(table: pa.Table) -> Columns:
    """Flat columns of an Arrow table (a parquet file's, or a Hub dataset's)."""
    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    return {name: table.column(name).to_pylist() for name in table.column_names}


def _jsonl_columns(path: Path) -> Columns:
    rows: list[dict[str, Any]] = []
    for line_no, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: line {line_no}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                            f"{exc.start + 1}); JSON Lines files are UTF-8") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {line_no}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {line_no}: expected a JSON object, got {type(obj).__name__}")
        rows.append(_flatten(obj))
    names = list(dict.fromkeys(k for r in rows for k in r))
    return {name: [r.get(name) for r in rows] for name in names}


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def resolve_columns(columns: Columns, path: Path | str) -> dict[str, str | None]:
    """The file's column for each field; an error naming the file when a required one is missing."""
    found = {f: next((c for c in names if c in columns), None) for f, names in FIELD_COLUMNS.items()}
    for f in REQUIRED:
        if found[f] is None:
            raise DataError(
                f"{path}: missing column for '{f}': expected one of {list(FIELD_COLUMNS[f])}; "
                f"the file has {sorted(columns)}"
            )
    return found


def prompt_text(value: Any) -> str:
    """The prompt as text: a string, or the last user turn of chat messages; ``TypeError`` says why not."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        users = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        if users and isinstance(users[-1], str):
            return users[-1]
        raise TypeError("chat-message prompt without a user turn holding text")
    raise TypeError(f"prompt must be text or chat messages, got {type(value).__name__}")


def ground_truth_text(value: Any) -> str:
    """Ground truth as a non-empty string; ints are converted, floats refused (``27.0`` is not ``27``)."""
    if value is None:
        raise TypeError("null ground truth")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise TypeError(f"ground truth must be a string, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise TypeError("empty ground truth")
    return value


class _RowError(Exception):
    """A bad row, with the column at fault."""

    def __init__(self, column: str | None, reason: str):
        super().__init__(reason)
        self.column, self.reason = column or "?", reason


def _row_record(columns: Columns, names: dict[str, str | None], row: int,
                default_source: str) -> PromptRecord:
    """One record; raises ``_RowError`` naming the offending column."""
    try:
        prompt = prompt_text(columns[names["prompt"]][row])
    except TypeError as exc:
        raise _RowError(names["prompt"], str(exc)) from None
    problem = extract_problem(prompt)
    if not problem.strip():
        raise _RowError(names["prompt"], "empty problem")
    try:
        truth = ground_truth_text(columns[names["ground_truth"]][row])
    except TypeError as exc:
        raise _RowError(names["ground_truth"], str(exc)) from None
    source = columns[names["data_source"]][row] if names["data_source"] else None
    index = columns[names["index"]][row] if names["index"] else None
    return PromptRecord(
        problem=problem, prompt=prompt, ground_truth=truth, data_source=str(source or default_source),
        index=str(row if index is None else index), row=row,
    )


def read_records(path: str | Path, on_bad_rows: Literal["reject", "skip"] = "reject",
                 default_source: str | None = None) -> tuple[list[PromptRecord], list[BadRow]]:
    """Records of one file and the bad rows skipped. With ``reject`` any bad row raises a ``DataError``
    listing the first ones. ``default_source`` (default: the file stem) fills a missing data_source."""
    path = Path(path)
    return columns_records(read_columns(path), str(path), on_bad_rows, default_source or path.stem)


def columns_records(columns: Columns, origin: str, on_bad_rows: Literal["reject", "skip"],
                    default_source: str) -> tuple[list[PromptRecord], list[BadRow]]:
    """``read_records`` of columns already in memory; ``origin`` (a file, or a Hub dataset) names them in errors."""
    names = resolve_columns(columns, origin)
    n_rows = len(next(iter(columns.values()), []))
    records: list[PromptRecord] = []
    bad: list[BadRow] = []
    for row in range(n_rows):
        try:
            records.append(_row_record(columns, names, row, default_source))
        except _RowError as exc:
            bad.append(BadRow(origin, row, exc.column, exc.reason))
    if bad and on_bad_rows == "reject":
        listed = "\n  ".join(str(b) for b in bad[:MAX_LISTED_BAD_ROWS])
        raise DataError(
            f"{origin}: {len(bad)} bad row(s) of {n_rows} (data.on_bad_rows='reject'; 'skip' drops them):"
            f"\n  {listed}"
        )
    return records, bad
