"""Loading the shared data files, and errors that name file, row and column."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from megatron_grpo.config import DataConfig
from megatron_grpo.data import BOXED_SUFFIX, DataError, load_train_dataset, read_records
from tests.shared_data import DATA as SHARED
from tests.shared_data import needs_shared, qwen3_tokenizer

AIME24_ANSWERS = (
    "204 113 371 385 110 104 721 25 809 116 104 294 540 197 480 73 468 601 23 321 211 315 236 45 33 80 55 "
    "699 127 902"
).split()


@needs_shared
@pytest.mark.parametrize("name, rows", [
    ("aime24.jsonl", 30), ("aime25.jsonl", 30), ("amc23.jsonl", 40), ("extra/amc_aimo_val83.jsonl", 83),
])
def test_eval_sets_load_with_expected_sizes(name, rows):
    records, bad = read_records(SHARED / "eval" / name)
    assert (len(records), bad) == (rows, [])
    assert all(r.problem == r.prompt and r.ground_truth.lstrip("-").isdigit() for r in records)


@needs_shared
def test_aime24_answers_and_ids_match_the_readme():
    records, _ = read_records(SHARED / "eval" / "aime24.jsonl", default_source="aime24")
    assert [r.ground_truth for r in records] == AIME24_ANSWERS
    assert [r.index for r in records] == [str(i) for i in range(60, 90)]
    assert {r.data_source for r in records} == {"aime24"}


@needs_shared
def test_both_training_files_load():
    full, bad_full = read_records(SHARED / "train" / "dapo_math_17k.parquet")
    proc, bad_proc = read_records(SHARED / "train" / "dapo_math_17k_processed_dedup17398.parquet")
    assert (len(full), len(proc), bad_full, bad_proc) == (17917, 17398, [], [])
    assert full[0].index == "9a9b6eb4-a1cb-49d1-8c1e-62eaf2f74079" and full[0].ground_truth == "34"
    assert {r.data_source for r in full} == {"math_dapo"} and {r.data_source for r in proc} == {"DAPO"}
    assert proc[0].index == "DAPO-0" and proc[0].prompt == proc[0].problem + BOXED_SUFFIX
    # the README: every Processed problem is in the full file, found by the extracted problem text
    assert {r.problem for r in proc} <= {r.problem for r in full}


def _write_parquet(path: Path, prompts: list, truths: list) -> Path:
    pq.write_table(pa.table({
        "prompt": pa.array(prompts, pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        "reward_model": pa.array([{"ground_truth": t} for t in truths],
                                 pa.struct([("ground_truth", pa.string())])),
    }), path)
    return path


def _chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_null_ground_truth_is_rejected_naming_file_row_and_column(tmp_path):
    path = _write_parquet(tmp_path / "t.parquet", [_chat("1+1?"), _chat("2+2?"), _chat("3+3?")],
                          ["2", "4", None])
    with pytest.raises(DataError) as err:
        read_records(path)
    assert f"{path}: row 2, column 'reward_model.ground_truth': null ground truth" in str(err.value)
    records, bad = read_records(path, "skip")
    assert [r.row for r in records] == [0, 1]
    assert [(b.row, b.column) for b in bad] == [(2, "reward_model.ground_truth")]


def test_non_string_prompt_and_empty_problem_are_bad_rows(tmp_path):
    path = tmp_path / "t.jsonl"
    rows = [{"problem": 7, "answer": "1"}, {"problem": BOXED_SUFFIX, "answer": "1"},
            {"problem": "ok", "answer": "1"}, {"problem": "x", "answer": 2.5}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, bad = read_records(path, "skip")
    assert [r.problem for r in records] == ["ok"]
    assert [(b.row, b.column) for b in bad] == [(0, "problem"), (1, "problem"), (3, "answer")]
    assert "prompt must be text" in bad[0].reason and bad[1].reason == "empty problem"
    with pytest.raises(DataError, match=r"3 bad row\(s\) of 4"):
        read_records(path)


def test_missing_column_names_file_and_columns(tmp_path):
    path = tmp_path / "nogt.parquet"
    pq.write_table(pa.table({"prompt": ["1+1?"], "data_source": ["x"]}), path)
    expected = r"nogt\.parquet: missing column for 'ground_truth'.*'data_source', 'prompt'"
    with pytest.raises(DataError, match=expected):
        read_records(path)


def test_text_file_renamed_parquet_is_a_clear_error(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text("problem,answer\n1+1,2\n")
    with pytest.raises(DataError, match=r"fake\.parquet: not a readable parquet file"):
        read_records(path)


def test_invalid_jsonl_line_and_unknown_extension(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"problem": "a", "answer": "1"}\n{"problem": \n')
    with pytest.raises(DataError, match=r"e\.jsonl: line 2: invalid JSON"):
        read_records(path)
    csv = tmp_path / "x.csv"
    csv.touch()
    with pytest.raises(DataError, match="unsupported file type '.csv'"):
        read_records(csv)


def test_a_non_utf8_row_is_named_by_line_and_byte(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"problem": "a", "answer": "1"}\n{"problem": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl: line 2: not UTF-8 \(byte 0xe9 at column 17\)"):
        read_records(path)


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.parquet", "blank.jsonl"])
def test_an_empty_file_is_named(tmp_path, name):
    path = tmp_path / name
    if name == "empty.parquet":
        pq.write_table(pa.table({"prompt": pa.array([], pa.string()), "ground_truth": pa.array([], pa.string())}), path)
    else:
        path.write_text("" if name == "empty.jsonl" else "\n  \n")
    with pytest.raises(DataError, match=rf"{name}: no rows \(an empty file\)"):
        read_records(path)


@pytest.fixture(scope="module")
def tokenizer():
    return qwen3_tokenizer()


def test_a_10mb_prompt_is_dropped_as_too_long_without_tokenizing_it(tmp_path, tokenizer, monkeypatch):
    """Longer, in characters, than max_prompt_length of the vocabulary's longest tokens: it cannot fit."""
    path = tmp_path / "huge.jsonl"
    rows = [{"problem": "x " * (5 << 20), "answer": "1"}, {"problem": "What is 1+1?", "answer": "2"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    encoded = []
    real = tokenizer.__class__.__call__
    monkeypatch.setattr(tokenizer.__class__, "__call__", lambda self, texts, **kw: encoded.extend(texts) or
                        real(self, texts, **kw))
    dataset, report = load_train_dataset(DataConfig(train_files=[str(path)], prompt_template="boxed"), tokenizer,
                                         max_prompt_length=1024)
    assert [it.record.ground_truth for it in dataset.items] == ["2"] and report.too_long == 1
    assert max(map(len, encoded)) < 1000   # the 10 MB text never reached the tokenizer


def test_too_long_prompts_are_dropped_and_counted(tmp_path, tokenizer):
    problems = ["What is 1+1?", "Compute " + "x + " * 300 + "1.", "Find " + "y " * 40 + "now.", "Is 2 prime?"]
    path = _write_parquet(tmp_path / "t.parquet", [_chat(p) for p in problems] + [None],
                          ["2", "1", "0", "yes", "1"])
    cfg = DataConfig(train_files=[str(path)], prompt_template="boxed", on_bad_rows="skip")
    # lengths counted independently: transformers' own tokenizing chat template
    kwargs = {"tokenize": True, "add_generation_prompt": True, "enable_thinking": False}
    lengths = [len(tokenizer.apply_chat_template(_chat(p + BOXED_SUFFIX), **kwargs)["input_ids"])
               for p in problems]
    limit = max(lengths[0], lengths[3])   # a prompt of exactly max_prompt_length tokens is kept
    dataset, report = load_train_dataset(cfg, tokenizer, max_prompt_length=limit)
    expected = [p for p, n in zip(problems, lengths, strict=True) if n <= limit]
    assert [it.record.problem for it in dataset.items] == expected == ["What is 1+1?", "Is 2 prime?"]
    assert [len(it.prompt_ids) for it in dataset.items] == [n for n in lengths if n <= limit]
    assert (report.rows_read, len(report.bad_rows), report.too_long, report.kept) == (5, 1, 2, 2)
    assert f"2 prompts too long > {limit} tokens dropped" in report.summary()
