"""tools/prepare_data.py and the dedup it uses: counts and conflicts of DAPO-Math-17k from the README."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from megatron_grpo.data import PromptRecord, dedup_records, read_records

REPO = Path(__file__).parents[2]
SHARED = REPO.parent / "shared" / "data"
TOOL = REPO / "tools" / "prepare_data.py"
# the 7 conflicting duplicates listed in shared/data/README.md §5
README_CONFLICTS = [
    {"239", "48"}, {"15", "25"}, {"21", "99"}, {"6", "64"}, {"108", "180"}, {"248", "36"}, {"-1", "-2"},
]


def _tool():
    spec = importlib.util.spec_from_file_location("prepare_data", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dedup_of_dapo17k_rebuilds_the_processed_set(tmp_path):
    out, report_path = tmp_path / "train.parquet", tmp_path / "report.json"
    source = SHARED / "train" / "dapo_math_17k.parquet"
    rc = _tool().main([str(source), "-o", str(out), "--report", str(report_path)])
    report = json.loads(report_path.read_text())
    assert rc == 0
    assert (report["rows_read"], report["duplicates_dropped"], report["duplicated_problems"],
            report["rows_written"]) == (17917, 519, 495, 17398)
    assert sorted(map(set, (c["ground_truths"] for c in report["conflicting_duplicates"])), key=sorted) == \
        sorted(README_CONFLICTS, key=sorted)
    assert pq.read_schema(out).names == ["prompt", "ground_truth", "data_source", "index"]
    written, _ = read_records(out)
    processed, _ = read_records(SHARED / "train" / "dapo_math_17k_processed_dedup17398.parquet")
    assert {r.problem for r in written} == {r.problem for r in processed}
    assert all(r.prompt == r.problem and r.data_source == "math_dapo" for r in written)   # --template raw


def _rec(problem: str, truth: str, index: str) -> PromptRecord:
    return PromptRecord(problem, problem, truth, "t", index, int(index))


def test_dedup_keeps_first_and_reports_conflicts_per_key():
    records = [_rec("a  b", "1", "0"), _rec("c", "2", "1"), _rec("a  b", "3", "2"), _rec("a b ", "1", "3"),
               _rec("c", "2", "4")]
    exact = dedup_records(records, "exact")
    assert [r.index for r in exact.kept] == ["0", "1", "3"] and exact.dropped == 2
    assert [(c.ground_truths, c.indices) for c in exact.conflicts] == [(["1", "3"], ["0", "2"])]
    spaced = dedup_records(records, "whitespace")
    assert [r.index for r in spaced.kept] == ["0", "1"] and spaced.duplicated_problems == 2
    assert spaced.conflicts[0].indices == ["0", "2", "3"]
    assert dedup_records(records, "none").kept == records


def test_template_option_and_jsonl_input(tmp_path):
    out = tmp_path / "aime.parquet"
    assert _tool().main([str(SHARED / "eval" / "aime24.jsonl"), "-o", str(out), "--template", "dapo",
                         "--data-source", "aime24"]) == 0
    records, _ = read_records(out)
    assert len(records) == 30 and records[0].ground_truth == "204" and records[0].index == "60"
    assert records[0].prompt.startswith("Solve the following")
    assert records[0].problem.startswith("Every morning")
    assert {r.data_source for r in records} == {"aime24"}


def test_help_lists_every_option_and_errors_exit_nonzero(tmp_path):
    help_text = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True,
                               check=True).stdout
    for option in ("--output", "--template", "--dedup", "--on-bad-rows", "--data-source", "--report",
                   "inputs"):
        assert option in help_text
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    proc = subprocess.run([sys.executable, str(TOOL), str(bad), "-o", str(tmp_path / "o.parquet")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and f"{bad}: not a readable parquet file" in proc.stderr
