"""The labelled benchmark behind bench/reward.py: its files are well formed and cover every kind of case,
its report counts errors as a naive loop does, and DAPO-Math's real ground truths grade against themselves."""

import importlib.util
import json
import random
import sys
from collections import Counter
from pathlib import Path

import pytest

from megatron_grpo.reward import math_reward
from tests.shared_data import DATA, needs_shared

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_reward", ROOT / "bench" / "reward.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_reward"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


bench = _bench()


@pytest.fixture(scope="module")
def cases():
    return bench.load_cases()


def test_the_benchmark_is_large_sourced_and_covers_every_category(cases):
    assert len(cases) >= 400
    assert len({case.id for case in cases}) == len(cases)
    by_category = Counter((case.category, case.label) for case in cases)
    for category in bench.CATEGORIES:  # every kind of case, right and wrong answers alike
        assert by_category[category, 1] >= 2 and by_category[category, 0] >= 1, category
    repos = Counter(case.source["repo"] for case in cases)
    for repo in ("huggingface/Math-Verify", "EleutherAI/lm-evaluation-harness", "QwenLM/Qwen2.5-Math",
                 "openai/prm800k", "volcengine/verl"):
        assert repos[repo] >= 10, repo
    contested = [case for case in cases if case.contested]
    assert 20 <= len(contested) <= len(cases) // 4
    assert all(len(case.reason) > 20 for case in contested)
    assert 0.2 <= sum(case.label == 0 for case in cases) / len(cases) <= 0.5


@pytest.mark.parametrize(("change", "message"), [
    ({"label": 2}, "label must be 0 or 1"),
    ({"category": "misc"}, "category one of"),
    ({"contested": True, "reason": " "}, "needs its reason"),
    ({"source": {"path": "x"}}, "source needs repo and path"),
    ({"labels": 1}, "unknown fields ['labels']"),
    ({"response": None}, "field 'response' must be a str"),
])
def test_a_malformed_case_names_its_file_line_and_field(tmp_path, change, message):
    good = {"id": "x-1", "response": "\\boxed{1}", "ground_truth": "1", "label": 1, "category": "integer",
            "contested": False, "reason": "", "source": {"repo": "r", "path": "p"}}
    lines = [json.dumps(good), json.dumps(good | {"id": "x-2"} | change)]
    (tmp_path / "cases.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="cases.jsonl:2") as error:
        bench.load_cases(tmp_path)
    assert message in str(error.value)


def test_duplicate_ids_are_refused(tmp_path):
    row = {"id": "x-1", "response": "1", "ground_truth": "1", "label": 1, "category": "integer",
           "contested": False, "reason": "", "source": {"repo": "r", "path": "p"}}
    (tmp_path / "a.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="duplicate case ids"):
        bench.load_cases(tmp_path)


def test_report_counts_errors_as_a_naive_loop(cases):
    rng = random.Random(0)
    scores = [float(rng.random() < 0.5) for _ in cases]
    row = bench.report("coin", cases, scores, 1.0)
    fp = sum(1 for c, s in zip(cases, scores, strict=True) if c.label == 0 and s == 1.0)
    fn = sum(1 for c, s in zip(cases, scores, strict=True) if c.label == 1 and s == 0.0)
    uncontested = [(c, s) for c, s in zip(cases, scores, strict=True) if not c.contested]
    assert (row["false_positives"], row["false_negatives"]) == (fp, fn)
    assert row["accuracy"] == round(1 - (fp + fn) / len(cases), 4)
    assert row["accuracy_uncontested"] == round(sum(c.label == s for c, s in uncontested) / len(uncontested), 4)
    assert sum(sum(v.values()) for v in row["errors_by_category"].values()) == fp + fn


def test_self_grading_finds_a_grader_that_fails():
    truths = ["12", "7", "7", "40"]
    assert bench.self_grade_failures(truths, math_reward) == []
    # a grader that says yes to everything fails on the next row's different answers (7 after 7 is skipped)
    failures = bench.self_grade_failures(truths, lambda response, truth: 1.0)
    assert {(row, truth) for row, _, truth in failures} == {(0, "7"), (2, "40"), (3, "12")}


@needs_shared
def test_dapo_ground_truths_grade_against_themselves():
    """A sample of DAPO-Math-17k's real ground truths (bench/reward.py runs all of them)."""
    truths = bench.read_dapo_truths(DATA / "train" / "dapo_math_17k.parquet")
    start = random.Random(0).randrange(len(truths) - 400)
    sample = truths[start:start + 400]
    assert bench.self_grade_failures(sample, math_reward) == []
    assert bench.self_grade_failures(sample, lambda r, t: math_reward(r, t, mode="lenient")) == []
