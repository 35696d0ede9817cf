"""Grading table: every labelled case must score exactly as labelled with the default 1/0 reward."""

import pytest
from grading_cases import (
    BOXES_AND_MISSING,
    EXPRESSIONS,
    FRACTIONS_DECIMALS,
    INTEGERS,
    INTERVALS_TUPLES_SETS,
    MALFORMED,
    RADICALS_PI,
    UNITS_PERCENT_TEXT,
)

from megatron_grpo.reward import answers_match, math_reward

TABLES = {
    "integer": INTEGERS, "fraction": FRACTIONS_DECIMALS, "radical": RADICALS_PI, "expression": EXPRESSIONS,
    "collection": INTERVALS_TUPLES_SETS, "unit": UNITS_PERCENT_TEXT, "box": BOXES_AND_MISSING,
    "malformed": MALFORMED,
}
CASES = [
    pytest.param(response, gt, score, id=f"{name}-{i}")
    for name, table in TABLES.items()
    for i, (response, gt, score) in enumerate(table)
]


def test_table_is_large_and_balanced():
    scores = [case.values[2] for case in CASES]
    assert len(scores) >= 150
    assert scores.count(0.0) >= 40 and scores.count(1.0) >= 100


@pytest.mark.parametrize(("response", "ground_truth", "expected"), CASES)
def test_math_reward(response, ground_truth, expected):
    assert math_reward(response, ground_truth) == expected


def test_docstring_examples():
    import doctest
    import importlib

    # the package attribute ``math_reward`` is the function; the module is reached by name
    result = doctest.testmod(importlib.import_module("megatron_grpo.reward.math_reward"))
    assert result.attempted >= 3 and result.failed == 0


@pytest.mark.parametrize(("pred", "gt", "expected"), [
    ("3:00", "12:00", False),  # a time parsed as 3/0 is undefined, and undefined equalled everything
    ("3:00", "3:00", True),
    ("\\frac{1}{2^{98}}", "\\frac{1}{2^{99}}", False),  # tiny values are not zero
    ("2^{-99}", "\\frac{1}{2^{99}}", True),
    ("\\sin(\\pi)", "0", True),
    ("10^{-30}", "0", True),  # around 0 only an absolute tolerance works
    ("\\frac{1}{2}", "0", False),
])
def test_undefined_and_tiny_values(pred, gt, expected):
    assert answers_match(pred, gt) is expected


@pytest.mark.parametrize("mode", ["strict", "lenient"])
def test_minervas_final_answer_line_grades_its_answer(mode):
    tail = "\n\nFinal Answer: The final answer is $24$. I hope it is correct."
    assert math_reward("so \\boxed{24}." + tail, "24", mode=mode) == 1.0
    assert math_reward("so \\boxed{24}." + tail, "25", mode=mode) == 0.0
