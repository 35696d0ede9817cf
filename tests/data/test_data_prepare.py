"""``megatron-grpo data prepare`` (the reference datasets, from local copies and through the Hub seam) and
``data convert`` (a user's files, deduplicated: counts and conflicts of DAPO-Math-17k from the README)."""

import json
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from megatron_grpo.cli import main
from megatron_grpo.data import DataError, PromptRecord, dedup_records, read_records
from megatron_grpo.data import prepare as prep
from tests.shared_data import DATA as SHARED
from tests.shared_data import needs_shared

# the 7 conflicting duplicates listed in shared/data/README.md §5
README_CONFLICTS = [
    {"239", "48"}, {"15", "25"}, {"21", "99"}, {"6", "64"}, {"108", "180"}, {"248", "36"}, {"-1", "-2"},
]
TRAIN_COLUMNS = ["prompt", "ground_truth", "data_source", "index"]


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _eval_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Every dataset of ``data prepare --from`` the offline mirror, through the CLI."""
    if not SHARED.is_dir():
        pytest.skip(f"the offline data mirror {SHARED} is absent")
    out = tmp_path_factory.mktemp("prepared")
    assert main(["data", "prepare", "--from", str(SHARED), "--out", str(out)]) == 0
    return out


def test_prepare_from_local_copies_writes_every_dataset_in_the_project_formats(prepared):
    report = json.loads((prepared / "prepare.json").read_text())
    assert {name: entry["rows"] for name, entry in report.items()} == {
        "dapo17k": 17917, "dapo17k_processed": 17398, "aime24": 30, "aime25": 30, "amc23": 40, "amc83": 83}
    for entry in report.values():
        assert prep.hashlib.sha256((prepared / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    raw, processed = (prepared / "train" / f"{name}.parquet" for name in ("dapo_math_17k", "dapo_math_17k_processed"))
    assert pq.read_schema(raw).names == TRAIN_COLUMNS == pq.read_schema(processed).names
    written, _ = read_records(processed)
    original, _ = read_records(SHARED / "train" / "dapo_math_17k_processed_dedup17398.parquet")
    assert [(r.prompt, r.ground_truth) for r in written] == [(r.problem, r.ground_truth) for r in original]
    raw_records, _ = read_records(raw)
    assert raw_records[0].prompt == raw_records[0].problem and not raw_records[0].prompt.startswith("Solve")
    for name, local in (("aime24", "aime24.jsonl"), ("aime25", "aime25.jsonl"), ("amc23", "amc23.jsonl"),
                        ("amc83", "extra/amc_aimo_val83.jsonl")):
        assert _eval_rows(prepared / report[name]["file"]) == _eval_rows(SHARED / "eval" / local), name


def test_prepare_canonicalizes_answers_and_dedups_dapo_by_index(tmp_path):
    src = tmp_path / "mirror"
    _jsonl(src / "eval" / "aime24.jsonl", [
        {"id": 1, "problem": " P1 ", "answer": "025"}, {"id": 2, "problem": "P2", "answer": 27.0},
        {"id": 3, "problem": "P3", "answer": "336^\\circ"}, {"id": 4, "problem": "P4", "answer": "\\frac{1}{2}"}])
    dapo = {"prompt": [[{"role": "user", "content": "Q1"}], [{"role": "user", "content": "Q2"}],
                       [{"role": "user", "content": "Q1"}]],
            "reward_model": [{"ground_truth": "1"}, {"ground_truth": "2"}, {"ground_truth": "1"}],
            "extra_info": [{"index": "a"}, {"index": "b"}, {"index": "a"}]}
    (src / "train").mkdir()
    pq.write_table(pa.table(dapo), src / "train" / "dapo_math_17k.parquet")
    report = prep.prepare(tmp_path / "out", src, ["aime24", "dapo17k"])
    assert [(r["problem"], r["answer"]) for r in _eval_rows(tmp_path / "out" / "eval" / "aime24.jsonl")] == [
        ("P1", "25"), ("P2", "27"), ("P3", "336"), ("P4", "\\frac{1}{2}")]
    assert pq.read_table(tmp_path / "out" / "train" / "dapo_math_17k.parquet").to_pydict() == {
        "prompt": ["Q1", "Q2"], "ground_truth": ["1", "2"], "data_source": ["dapo17k", "dapo17k"], "index": ["a", "b"]}
    assert report["dapo17k"]["rows"] == 2 and not (tmp_path / "out" / "eval" / "aime25.jsonl").exists()


def test_prepare_names_the_missing_local_file_and_the_unknown_dataset(tmp_path, capsys):
    with pytest.raises(DataError, match=r"aime25\.jsonl: not found; --from expects aime25 at eval/aime25\.jsonl"):
        prep.prepare(tmp_path / "out", tmp_path, ["aime25"])
    with pytest.raises(DataError, match=r"unknown dataset\(s\) \['aime2024'\]"):
        prep.prepare(tmp_path / "out", tmp_path, ["aime2024"])
    _jsonl(tmp_path / "eval" / "aime25.jsonl", [{"id": 1, "problem": "P1", "answer": None}])
    assert main(["data", "prepare", "--from", str(tmp_path), "--out", str(tmp_path / "out"), "--only", "aime25"]) == 2
    assert "aime25.jsonl: 1 bad row(s) of 1" in capsys.readouterr().err and not (tmp_path / "out").exists()


class _FakeHub:
    """``datasets.load_dataset`` as the Hub answers it: the files of each repo, and what it was asked for."""

    def __init__(self, tables: dict[str, pa.Table]):
        self.tables, self.calls = tables, []

    def load_dataset(self, repo, config=None, *, split, revision):
        self.calls.append((repo, config, split, revision))
        return types.SimpleNamespace(with_format={"arrow": _Rows(self.tables[repo])}.__getitem__)


class _Rows:
    """A dataset in arrow format: ``[:]`` is the whole table."""

    def __init__(self, table: pa.Table):
        self.table = table

    def __getitem__(self, key):
        assert key == slice(None)
        return self.table


def test_prepare_from_the_hub_loads_each_dataset_at_its_pinned_revision(tmp_path, monkeypatch):
    dapo = pa.table({"data_source": ["math_dapo"] * 4,
                     "prompt": [[{"role": "user", "content": f"Q{i % 2}"}] for i in range(4)],
                     "reward_model": [{"ground_truth": str(i % 2), "style": "rule"} for i in range(4)],
                     "extra_info": [{"index": f"u{i % 2}"} for i in range(4)]})
    amc = pa.table({"id": [0, 1, 2], "problem": ["A", "B", "C"], "answer": [142.0, 7.0, 3.0],
                    "url": ["https://aops.com/wiki/2022_AMC_12A_Problems/Problem_1",
                            "https://aops.com/wiki/2023_AMC_12A_Problems/Problem_5",
                            "https://aops.com/wiki/2023_AMC_12B_Problems/Problem_9"]})
    hub = _FakeHub({"BytedTsinghua-SIA/DAPO-Math-17k": dapo, "AI-MO/aimo-validation-amc": amc})
    monkeypatch.setitem(sys.modules, "datasets", hub)
    report = prep.prepare(tmp_path, None, ["dapo17k", "amc23", "amc83"])
    assert hub.calls == [(s.hub.repo, s.hub.config, s.hub.split, s.hub.revision)
                         for s in (prep.SOURCES[n] for n in ("dapo17k", "amc23", "amc83"))]
    assert all(len(revision) == 40 for *_, revision in hub.calls)
    assert report["dapo17k"]["rows"] == 2 and report["dapo17k"]["from"].startswith("BytedTsinghua-SIA/DAPO-Math-17k@")
    assert _eval_rows(tmp_path / "eval" / "amc23.jsonl") == [
        {"id": 1, "problem": "B", "answer": "7", "source": "2023 AMC 12A Problem 5"},
        {"id": 2, "problem": "C", "answer": "3", "source": "2023 AMC 12B Problem 9"}]
    assert [r["answer"] for r in _eval_rows(tmp_path / "eval" / "amc83.jsonl")] == ["142", "7", "3"]
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match=r"math-ai/aime25: loading from the Hub needs the 'datasets' package.*--from"):
        prep.prepare(tmp_path, None, ["aime25"])


@needs_shared
def test_convert_dedups_dapo17k_into_the_processed_set(tmp_path):
    out, report_path = tmp_path / "train.parquet", tmp_path / "report.json"
    source = SHARED / "train" / "dapo_math_17k.parquet"
    assert main(["data", "convert", str(source), "-o", str(out), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert (report["rows_read"], report["duplicates_dropped"], report["duplicated_problems"],
            report["rows_written"]) == (17917, 519, 495, 17398)
    assert sorted(map(set, (c["ground_truths"] for c in report["conflicting_duplicates"])), key=sorted) == \
        sorted(README_CONFLICTS, key=sorted)
    assert pq.read_schema(out).names == TRAIN_COLUMNS
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


def test_convert_template_option_and_jsonl_input(tmp_path):
    src, out = tmp_path / "aime.jsonl", tmp_path / "aime.parquet"
    _jsonl(src, [{"id": 60, "problem": "Every morning", "answer": "204"},
                 {"id": 61, "problem": "Let", "answer": "113"}])
    assert main(["data", "convert", str(src), "-o", str(out), "--template", "dapo", "--data-source", "aime24"]) == 0
    records, _ = read_records(out)
    assert [(r.ground_truth, r.index) for r in records] == [("204", "60"), ("113", "61")]
    assert records[0].prompt.startswith("Solve the following") and records[0].problem == "Every morning"
    assert {r.data_source for r in records} == {"aime24"}


def test_convert_help_lists_every_option_and_errors_exit_nonzero(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["data", "convert", "--help"])
    help_text = capsys.readouterr().out
    for option in ("--output", "--template", "--dedup", "--on-bad-rows", "--data-source", "--report", "inputs"):
        assert option in help_text
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    assert main(["data", "convert", str(bad), "-o", str(tmp_path / "o.parquet")]) == 2
    assert f"{bad}: not a readable parquet file" in capsys.readouterr().err
    assert not (tmp_path / "o.parquet").exists()
