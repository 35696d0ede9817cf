"""mean@n / pass@k / maj@k against brute force over all k-subsets; micro vs macro aggregation; reports."""

import itertools
import json
import random
from collections import Counter
from math import comb

import pytest

from megatron_grpo.eval import (
    ProblemOutcome,
    maj_at_k,
    pass_at_k,
    report_ks,
    summarize,
    to_markdown,
    write_report,
)


def brute_force(answers, correct, k):
    """Averages over every k-subset of (accuracy, any correct, majority vote: ties split, None not voting)."""
    value = {a: [c for b, c in zip(answers, correct, strict=True) if b == a] for a in set(answers) - {None}}
    acc = anyc = maj = 0.0
    subsets = list(itertools.combinations(range(len(answers)), k))
    for sub in subsets:
        acc += sum(correct[i] for i in sub) / k
        anyc += any(correct[i] for i in sub)
        votes = Counter(answers[i] for i in sub if answers[i] is not None)
        if votes:
            top = [a for a, v in votes.items() if v == max(votes.values())]
            maj += sum(sum(value[a]) / len(value[a]) for a in top) / len(top)
    return acc / len(subsets), anyc / len(subsets), maj / len(subsets)


def _random_case(rng):
    n = rng.randint(1, 10)
    answers = [rng.choice(["7", "8", "9", None]) for _ in range(n)]
    correct = [a == "7" for a in answers]
    return answers, correct, rng.randint(1, n)


def test_metrics_match_brute_force_on_random_cases():
    rng = random.Random(0)
    for _ in range(200):
        answers, correct, k = _random_case(rng)
        acc, anyc, maj = brute_force(answers, correct, k)
        assert sum(correct) / len(correct) == pytest.approx(acc)
        assert pass_at_k(len(correct), sum(correct), k) == pytest.approx(anyc, abs=1e-12)
        assert maj_at_k(answers, correct, k) == pytest.approx(maj, abs=1e-12)


def test_majority_ties_split_credit_and_unanswered_do_not_vote():
    assert maj_at_k(["1", "2"], [True, False], 2) == 0.5
    assert maj_at_k(["1", None, None], [True, False, False], 3) == 1.0
    assert maj_at_k([None, None], [False, False], 2) == 0.0
    assert maj_at_k(["1", "2", "2"], [True, False, False], 3) == 0.0
    # a grader that disagrees within one answer group gives that answer fractional value
    assert maj_at_k(["1", "1"], [True, False], 2) == 0.5


def test_pass_at_k_is_stable_for_large_n():
    assert pass_at_k(1000, 1, 500) == pytest.approx(0.5)
    assert pass_at_k(2000, 3, 1000) == pytest.approx(1 - comb(1997, 1000) / comb(2000, 1000))
    assert pass_at_k(16, 0, 16) == 0.0 and pass_at_k(16, 1, 16) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_report_ks():
    assert report_ks(16) == [1, 2, 4, 8, 16]
    assert report_ks(6) == [1, 2, 4, 6]
    assert report_ks(1) == [1]


def _outcomes():
    a = ProblemOutcome("a", "0", [True, True, True, True], ["5", "5", "5", "5"])
    b = [ProblemOutcome("b", str(i), [False, False, True, False], ["1", "2", "3", None]) for i in range(3)]
    return [a, *b]


def test_overall_is_micro_over_problems_and_macro_over_sets():
    m = summarize(_outcomes(), k=4)
    assert m.n == 4 and m.problems == {"a": 1, "b": 3}
    assert m.per_set["a"]["mean@4"] == 1.0 and m.per_set["b"]["mean@4"] == 0.25
    assert m.overall["mean@4"] == pytest.approx((1.0 + 3 * 0.25) / 4)
    assert m.macro["mean@4"] == pytest.approx((1.0 + 0.25) / 2)
    assert m.per_set["b"]["maj@4"] == pytest.approx(1 / 3)   # three-way tie, one correct
    assert m.flat()["eval/b/pass@1"] == 0.25 and "eval/macro/maj@2" in m.flat()
    with pytest.raises(ValueError, match="same number of samples"):
        summarize(_outcomes(), k=8)


def test_json_and_markdown_reports(tmp_path):
    m = summarize(_outcomes(), k=4)
    path = write_report(m, _outcomes(), tmp_path, "step_000020")
    payload = json.loads(path.read_text())
    assert payload["metrics"]["macro"] == m.macro and len(payload["problems"]) == 4
    table = to_markdown(m).splitlines()
    assert table[0] == "| set | problems | mean@4 | pass@1 | pass@2 | pass@4 | maj@1 | maj@2 | maj@4 |"
    assert table[2].startswith("| a | 1 | 100.00 |")
    assert table[-1].startswith("| macro (mean of sets) | 4 | 62.50 |")
    assert (tmp_path / "step_000020.md").read_text() == to_markdown(m)
