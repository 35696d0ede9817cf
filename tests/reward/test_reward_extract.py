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


MINERVA = "Final Answer: The final answer is $24$. I hope it is correct."


@pytest.mark.parametrize("mode", ["strict", "lenient"])
@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (MINERVA, "$24$"),
        ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "$\\frac{3}{4}$"),
        ("so \\boxed{24}.\n\n" + MINERVA, "$24$"),  # the sentence no longer overrides the box with itself
        ("Final Answer: the final answer is 7", "7"),
        ("Answer: 12", "12"),
    ],
)
def test_minervas_answer_line_gives_its_answer(response, expected, mode):
    assert extract_answer(response, mode=mode) == expected


@pytest.mark.parametrize(
    ("response", "lenient"),
    [
        ("Therefore, the final answer is $ 42 $.", "$ 42 $"),
        ("The answer is 17.", "17"),
        ("So the answer is $\\frac{1}{2}$. Done.", "$\\frac{1}{2}$"),
        ("Solving, we get\n\\[ x = 5 \\]", "x = 5"),
        ("Solving, we get\n$$\\frac{7}{2}$$.", "\\frac{7}{2}"),
        ("thus $\\boxed{3}$, $\\boxed{7}$", "3, 7"),
        ("\\boxed{a = 4} \\text{ and } \\boxed{b = 9}", "a = 4, b = 9"),
        ("\\boxed{2} or \\boxed{-2}", "2, -2"),
    ],
)
def test_lenient_mode_finds_answers_a_human_grader_would(response, lenient):
    assert extract_answer(response, mode="lenient") == lenient
    strict = extract_answer(response)
    assert strict != lenient  # strict: boxes and Answer: lines only, the last box alone
    if "\\boxed" in response:
        assert strict == lenient.split(", ")[-1]
    else:
        assert strict is None


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("\\boxed{1} then \\boxed{2}", "2"),  # text between: the last box only
        ("\\boxed{2}\n\\boxed{3}", "3"),  # another line
        ("\\boxed{4} \\boxed{4}", "4"),  # one answer boxed twice
        ("\\boxed 5, \\boxed{6}", "6"),
        ("x\n\\boxed{2}, \\boxed{3", None),  # the last box never closes: truncated
        ("The answer is 3, but checking again \\boxed{4}", "4"),  # a box outranks sentences
    ],
)
def test_lenient_mode_joins_only_boxes_that_answer_together(response, expected):
    assert extract_answer(response, mode="lenient") == expected


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="lenient"):
        extract_answer("7", mode="loose")
