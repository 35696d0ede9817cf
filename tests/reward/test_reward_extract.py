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


@pytest.mark.parametrize("mode", ["strict", "lenient"])
@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("so \\boxed{24}.<|im_end|>\n<|im_start|>user\n\\boxed{3}", "24"),  # a turn ends at its first token
        ("Answer: 24</s> Answer: 3", "24"),
        ("Answer: 12\n\nLet me double-check the answer: 12 = 3 \\cdot 4.", "12"),  # not an answer line
        ("It is 5. The final answer: 7", "7"),
        ("**Final Answer:** 42", "42"),
        ("Half of 84 is 42.\n#### 42", "42"),  # GSM8K
        ("#### 42", "42"),
        ("Final Answer: The maximum number of points is 19.", "19"),  # an answer line that is a sentence
        ("Final Answer: The final answer is $28 \\%$. I hope it is correct. Note: checked twice.", "$28 \\%$"),
    ],
)
def test_answer_lines_and_turn_ends(response, expected, mode):
    assert extract_answer(response, mode=mode) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("-5", "-5"),  # a response that is only an answer
        ("$[0,1)$", "[0,1)"),
        ("28 percent", "28 percent"),
        ("Answer \\( (9+1) \\)", "(9+1)"),
        ("Special matrix: $ x^2 $", "x^2"),
        ("A. Because B is not valid", "A"),
        ("Therefore $x \\geq 5$ is the solution.", "x \\geq 5"),  # inline math closing the response
        ("Long work.\nSo the ordered pair $(x, y)$ that solves the system is $(7, 6)$.", "(7, 6)"),
        ("Long work.\nThe probability that Alice wins is 2/3.", "2/3"),  # "... is X." closing it
        ("Long work.\nthe number is not 10 which is 1,000.99", "1,000.99"),
        ("Checking each candidate, only 17 works. So 17 is the answer.", "17"),
        ("Solving,\n\\[\nx = -\\frac{3}{2}.\n\\]", "x = -\\frac{3}{2}."),  # a display over several lines
        ("the roots are $x = \\boxed{3}$ and $x = \\boxed{7}$.", "3, 7"),  # boxes joined past "x ="
        ("\\[ \\boxed{-2} \\quad \\text{and} \\quad \\boxed{1}. \\]", "-2, 1"),
        ("We tried many things and the sum of the parts is not known yet, so we stop here at last.", None),
    ],
)
def test_lenient_mode_finds_the_answer_a_response_closes_on(response, expected):
    assert extract_answer(response, mode="lenient") == expected
    if "boxed" not in response:
        assert extract_answer(response) is None  # strict never guesses


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Work.\nTherefore $x = 5$ or $x = -3$.", "x = 5, x = -3"),
        ("Work.\nThe roots are $2$, $3$, and $5$.", "2, 3, 5"),
        ("Work.\nWe have $a = 2$ so the total is $7$.", "7"),  # joined only by "and"/"or"/commas
    ],
)
def test_lenient_mode_joins_closing_inline_math(response, expected):
    assert extract_answer(response, mode="lenient") == expected
