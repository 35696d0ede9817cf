"""``normalize_answer`` keys: equal for the same answer written differently, different otherwise."""

import pytest

from megatron_grpo.reward import normalize_answer
from megatron_grpo.reward.normalize import parse_number

SAME = [
    ("25", "025"), ("25", "25.0"), ("27", "27.000"), ("1/2", "\\frac{1}{2}"), ("1/2", "0.5"),
    ("1/2", "\\dfrac12"), ("1/2", "\\tfrac{1}{2}"), ("1000", "1,000"), ("1000", "1{,}000"),
    ("1000", "\\$1,000"), ("50", "50\\%"), ("336", "336^\\circ"), ("336", "336^{\\circ}"), ("5", "x = 5"),
    ("5", "5\\text{ cm}"), ("10", "10 inches"), ("(1,2)", "\\left( 1, 2 \\right)"),
    ("monday", "\\text{Monday}"), ("c", "\\textbf{(C)}"), ("-3", "−3"), ("\\sqrt{2}", "\\sqrt 2"),
    ("7", "\\boxed{7}"), ("3", "\\( 3 \\)"), ("3", "$3$."), ("0", "-0"), ("3,4", "3 \\text{ and } 4"),
    ("\\{1,2\\}", "\\lbrace 1, 2 \\rbrace"), ("-1/2", "\\frac{-1}{2}"),
]
DIFFERENT = [("2", "2x"), ("2", "2m"), ("(1,2)", "[1,2]"), ("1/2", "1/3"), ("25", "250"), ("12", "1,2")]


@pytest.mark.parametrize(("a", "b"), SAME)
def test_same_answers_share_a_key(a, b):
    assert normalize_answer(a) == normalize_answer(b)


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_different_answers_have_different_keys(a, b):
    assert normalize_answer(a) != normalize_answer(b)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("12", 12), ("-0.25", -0.25), ("3/4", 0.75), ("\\frac{3}{4}", 0.75), ("-\\frac{3}{4}", -0.75),
     ("1/0", None), ("x", None), ("1" * 5000, None)],
)
def test_parse_number(text, expected):
    assert parse_number(text) == expected
