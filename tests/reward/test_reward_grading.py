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

from megatron_grpo.reward import math_reward

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
