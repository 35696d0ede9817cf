"""Answer extraction: DAPO ``Answer:`` lines, last ``\\boxed``/``\\fbox``, fallbacks and the tail cut."""

import pytest

from megatron_grpo.reward import extract_answer


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Answer: 5", "5"),
        ("so the total is 12.\nAnswer: 12", "12"),
        ("answer: 7", "7"),
        ("**Answer:** 42", "42"),
        ("**Final Answer**: 42", "42"),
        ("Answer: 3\nwait, no.\nAnswer: 4", "4"),
        ("Answer:\n9", "9"),
        ("Answer: $\\frac{1}{2}$", "$\\frac{1}{2}$"),
        ("Answer: \\boxed{8}", "8"),
        ("thus $\\boxed{204}$.", "204"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("\\boxed {6}", "6"),
        ("\\boxed 5", "5"),
        ("$\\boxed 5$", "5"),
        ("\\fbox{11}", "11"),
        ("Answer: 3\nThe boxed form: \\boxed{4}", "4"),
        ("\\boxed{4} so\nAnswer: 3", "3"),
        ("no answer here, 7 apples", None),
        ("the result is \\boxed{12", None),
        ("\\boxed{}", None),
        ("", None),
        ("\\boxedx{3}", None),
    ],
)
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [("7", "7"), ("I think 3 then 7.", "7"), ("-12", "-12"), ("1,000 apples", "1,000"), ("x = 2.5", "2.5"),
     ("no digits", None), ("Answer: 9, not 10", "9, not 10")],
)
def test_last_number_fallback(response, expected):
    assert extract_answer(response, fallback="last_number") == expected


def test_tail_cut_hides_an_early_answer():
    response = "\\boxed{3}" + "x" * 1000
    assert extract_answer(response, tail_chars=500) is None
    assert extract_answer(response, tail_chars=2000) == "3"


def test_unknown_fallback_is_rejected():
    with pytest.raises(ValueError, match="last_number"):
        extract_answer("7", fallback="first_number")
