"""Every kind of answer a careful human grader accepts (issue 19's list), each with wrong twins that must
stay wrong. Equivalence is the same in both modes, so boxed cases are checked in both; answers outside a
box or an ``Answer:`` line count in lenient mode only."""

import pytest

from megatron_grpo.reward import answers_match, math_reward

B = "\\boxed"

UNMARKED = [  # lenient only: strict wants a box or an Answer: line
    ("so we get 5.\n\nThe final answer is $ 24 $", "24", 1.0),
    ("so we get 5.\n\nThe final answer is $ 25 $", "24", 0.0),
    ("Thus the area is\n\\[ 24 \\]", "24", 1.0),
    ("Thus the area is\n$$\nA = 24\n$$", "24", 1.0),
    ("Thus the area is\n$$\nA = 24\n$$\nor maybe 25, let me check.", "24", 0.0),  # display not at the end
    ("The answer is 24.", "24", 1.0),
    ("The answer is 24.<|im_end|>\n<|endoftext|>", "24", 1.0),  # a chat-template tail
    ("The answer is 24.</s>", "24", 1.0),
    ("The answer is 23.<|im_end|>", "24", 0.0),
]

MARKED_WITH_TAILS = [  # both modes; Minerva's line is an Answer: line
    ("Final Answer: The final answer is 24. I hope it is correct.", "24", 1.0),
    ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "0.75", 1.0),
    ("Final Answer: The final answer is 25. I hope it is correct.", "24", 0.0),
    ("long work... so $\\boxed{24}$.<|im_end|>", "24", 1.0),
    ("Answer: 24<|eot_id|>", "24", 1.0),
    ("Answer: 24 <|im_end|>", "25", 0.0),
]

UNITS_AND_TEXT = [
    (f"{B}{{40\\text{{ m}}^2}}", "40", 1.0),
    (f"{B}{{40 \\text{{m}}^{{2}}}}", "40", 1.0),
    (f"{B}{{12 \\text{{ cm}}^3}}", "12", 1.0),
    (f"{B}{{60\\mbox{{ km}}}}", "60", 1.0),
    (f"{B}{{\\$35}}", "35", 1.0),
    (f"{B}{{\\$35.50}}", "35.5", 1.0),
    (f"{B}{{35 \\text{{ percent}}}}", "35", 1.0),
    (f"{B}{{35\\text{{ dollars}}}}", "35", 1.0),
    (f"{B}{{\\text{{40 meters}}}}", "40", 1.0),
    (f"{B}{{41\\text{{ m}}^2}}", "40", 0.0),
    (f"{B}{{\\$36}}", "35", 0.0),
    (f"{B}{{40\\text{{ m}}^2}}", "4", 0.0),
]

MULTIPLE_BOXES = [  # lenient joins boxes that close the response together
    (f"{B}{{3}}, {B}{{7}}", "3, 7", 1.0),
    (f"{B}{{7}} and {B}{{3}}", "3, 7", 1.0),
    (f"{B}{{a = 4}} \\text{{ and }} {B}{{b = 9}}", "a=4, b=9", 1.0),
    (f"{B}{{3}}, {B}{{8}}", "3, 7", 0.0),
    (f"{B}{{3}}, {B}{{7}}, {B}{{9}}", "3, 7", 0.0),
]

TUPLES_AND_SETS = [
    (f"{B}{{(m,n)=(4,1)}}", "(4,1)", 1.0),
    (f"{B}{{(x, y) = (2, -3)}}", "(2,-3)", 1.0),
    (f"{B}{{(m,n)=(1,4)}}", "(4,1)", 0.0),
    (f"{B}{{\\{{1,2,3\\}}}}", "1;2;3", 1.0),
    (f"{B}{{1; 2; 3}}", "\\{1,2,3\\}", 1.0),
    (f"{B}{{1, 2, 3}}", "\\{1,2,3\\}", 1.0),
    (f"{B}{{3, 1, 2}}", "1, 2, 3", 1.0),
    (f"{B}{{\\{{1,2\\}}}}", "1;2;3", 0.0),
    (f"{B}{{1, 2, 4}}", "1, 2, 3", 0.0),
    (f"{B}{{\\pm 5}}", "5, -5", 1.0),
    (f"{B}{{x=\\pm 5}}", "-5, 5", 1.0),
    (f"{B}{{-5, 5}}", "\\pm 5", 1.0),
    (f"{B}{{\\pm\\sqrt{{2}}}}", "\\sqrt{2}, -\\sqrt{2}", 1.0),
    (f"{B}{{\\frac{{-1 \\pm \\sqrt{{13}}}}{{4}}}}", "\\frac{-1+\\sqrt{13}}{4}, \\frac{-1-\\sqrt{13}}{4}", 1.0),
    (f"{B}{{\\pm 5}}", "5", 0.0),
    (f"{B}{{5}}", "\\pm 5", 0.0),
    (f"{B}{{\\pm 4}}", "5, -5", 0.0),
    (f"{B}{{x = 1 \\text{{ or }} x = 4}}", "1, 4", 1.0),
    (f"{B}{{1 \\text{{ or }} 4}}", "1, 4", 1.0),
    (f"{B}{{1 or 4}}", "4, 1", 1.0),
    (f"{B}{{x=1, x=4}}", "1, 4", 1.0),
    (f"{B}{{x = 1 \\text{{ or }} x = 5}}", "1, 4", 0.0),
]

INTERVALS_AND_INEQUALITIES = [
    (f"{B}{{x \\in [1,2]}}", "1 \\le x \\le 2", 1.0),
    (f"{B}{{1 \\le x \\le 2}}", "[1,2]", 1.0),
    (f"{B}{{1 \\leq x \\leq 2}}", "[1,2]", 1.0),
    (f"{B}{{1 < x \\le 2}}", "(1,2]", 1.0),
    (f"{B}{{2 \\ge x > 1}}", "(1,2]", 1.0),
    (f"{B}{{x > 3}}", "(3, \\infty)", 1.0),
    (f"{B}{{3 < x}}", "x > 3", 1.0),
    (f"{B}{{x \\geq 3}}", "[3,\\infty)", 1.0),
    (f"{B}{{x < 1 \\text{{ or }} x > 2}}", "(-\\infty,1)\\cup(2,\\infty)", 1.0),
    (f"{B}{{(-\\infty,\\infty)}}", "\\mathbb{R}", 1.0),
    (f"{B}{{\\mathbb{{R}}}}", "(-\\infty, \\infty)", 1.0),
    (f"{B}{{ℝ}}", "(-\\infty, \\infty)", 1.0),
    (f"{B}{{1 < x < 2}}", "[1,2]", 0.0),
    (f"{B}{{x \\in (1,2)}}", "1 \\le x \\le 2", 0.0),
    (f"{B}{{x > 3}}", "[3,\\infty)", 0.0),
    (f"{B}{{x < 3}}", "x > 3", 0.0),  # a flipped inequality
    (f"{B}{{x \\le 1 \\text{{ or }} x > 2}}", "(-\\infty,1)\\cup(2,\\infty)", 0.0),
    (f"{B}{{(0,\\infty)}}", "\\mathbb{R}", 0.0),
]

EQUATIONS = [
    (f"{B}{{y = 2x + 1}}", "2x - y + 1 = 0", 1.0),
    (f"{B}{{y = -\\frac{{1}}{{2}}x + 3}}", "x + 2y - 6 = 0", 1.0),
    (f"{B}{{4x - 2y + 2 = 0}}", "y = 2x + 1", 1.0),
    (f"{B}{{x^2 + y^2 = 4}}", "y^2 + x^2 - 4 = 0", 1.0),
    (f"{B}{{y = 2x + 1}}", "2x - y - 1 = 0", 0.0),
    (f"{B}{{y = 2x + 1}}", "x - 2y + 1 = 0", 0.0),
    (f"{B}{{x^2 + y^2 = 4}}", "x^2 + y^2 = 2", 0.0),
    (f"{B}{{x = 1 \\text{{ or }} x = 4}}", "x=1, x=4", 1.0),
]

SHORTHAND_AND_SEPARATORS = [
    (f"{B}{{\\frac5{{5}}}}", "1", 1.0),
    (f"{B}{{\\frac{{5}}5}}", "1", 1.0),
    (f"{B}{{\\frac 5 5}}", "1", 1.0),
    (f"{B}{{\\frac3{{4}}}}", "0.75", 1.0),
    (f"{B}{{\\frac5{{6}}}}", "1", 0.0),
    (f"{B}{{3{{-}}x}}", "3-x", 1.0),
    (f"{B}{{2{{+}}x}}", "x+2", 1.0),
    (f"{B}{{1 000 000}}", "1000000", 1.0),
    (f"{B}{{1\\,000\\,000}}", "1000000", 1.0),
    (f"{B}{{1{{,}}000{{,}}000}}", "1000000", 1.0),
    (f"{B}{{1,000}}", "1000", 1.0),
    (f"{B}{{1 000 001}}", "1000000", 0.0),
    (f"{B}{{1{{,}}000}}", "100", 0.0),
]

MATRICES = [
    (f"{B}{{\\begin{{array}}{{cc}}1&2\\\\3&4\\end{{array}}}}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", 1.0),
    (f"{B}{{\\left[\\begin{{array}}{{c}}1\\\\2\\end{{array}}\\right]}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", 1.0),
    (f"{B}{{\\begin{{bmatrix}}1&2\\\\3&4\\end{{bmatrix}}}}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", 1.0),
    (f"{B}{{\\begin{{pmatrix}}0.5&2\\\\3&4\\end{{pmatrix}}}}", "\\begin{pmatrix}\\frac12&2\\\\3&4\\end{pmatrix}", 1.0),
    (f"{B}{{\\begin{{pmatrix}}1&2\\\\3&4\\end{{pmatrix}}}}", "\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}", 0.0),
    (f"{B}{{\\begin{{pmatrix}}1&2\\end{{pmatrix}}}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", 0.0),  # shape
]

KNOWN_BUGS = [  # each was wrong before; the wrong twins are the bugs
    (f"{B}{{3:00}}", "12:00", 0.0),
    (f"{B}{{12:00}}", "12:00", 1.0),
    (f"{B}{{24}}\n\nFinal Answer: The final answer is $24$. I hope it is correct.", "24", 1.0),
    (f"{B}{{\\frac{{1}}{{2^{{98}}}}}}", "\\frac{1}{2^{99}}", 0.0),
    (f"{B}{{10^{{-25}}}}", "10^{-26}", 0.0),
    (f"{B}{{2^{{-99}}}}", "\\frac{1}{2^{99}}", 1.0),
]

# Contested (docs/reward.md, "Contested cases"): the policy chosen, and where it stops.
CONTESTED = [
    (f"{B}{{0.\\overline{{3}}}}", "\\frac13", 1.0),  # repeating decimals are exact
    (f"{B}{{1.1\\overline{{6}}}}", "\\frac{7}{6}", 1.0),
    (f"{B}{{0.\\overline{{3}}}}", "0.3", 0.0),
    (f"{B}{{1.5e3}}", "1500", 1.0),  # e notation is a number ...
    (f"{B}{{2e}}", "2", 0.0),  # ... but e alone is Euler's number
    (f"{B}{{five}}", "5", 1.0),  # number words zero to twenty
    (f"{B}{{six}}", "5", 0.0),
    ("Answer: 5 apples", "5", 1.0),  # a number and one or two words
    ("Answer: 6 apples", "5", 0.0),
    (f"{B}{{3 x}}", "3", 0.0),  # a one-letter word is a variable
]
FOREIGN_MARKERS = [("答案：5", "5"), ("最终答案是 5", "5"), ("Réponse : 5", "5"), ("Ответ: 5", "5")]

BOTH_MODES = {
    "tails": MARKED_WITH_TAILS, "units": UNITS_AND_TEXT, "tuples": TUPLES_AND_SETS,
    "intervals": INTERVALS_AND_INEQUALITIES, "equations": EQUATIONS, "shorthand": SHORTHAND_AND_SEPARATORS,
    "matrices": MATRICES, "bugs": KNOWN_BUGS, "contested": CONTESTED,
}


def _params(tables):
    return [pytest.param(r, gt, score, id=f"{name}-{i}")
            for name, table in tables.items() for i, (r, gt, score) in enumerate(table)]


@pytest.mark.parametrize("mode", ["strict", "lenient"])
@pytest.mark.parametrize(("response", "ground_truth", "expected"), _params(BOTH_MODES))
def test_equivalence_is_the_same_in_both_modes(response, ground_truth, expected, mode):
    assert math_reward(response, ground_truth, mode=mode) == expected


@pytest.mark.parametrize(("response", "ground_truth", "expected"), _params({"unmarked": UNMARKED}))
def test_lenient_mode_finds_unmarked_answers_and_strict_does_not(response, ground_truth, expected):
    assert math_reward(response, ground_truth, mode="lenient") == expected
    assert math_reward(response, ground_truth, mode="strict") == 0.0


@pytest.mark.parametrize(("response", "ground_truth", "expected"), _params({"boxes": MULTIPLE_BOXES}))
def test_lenient_mode_joins_boxes_and_strict_takes_the_last(response, ground_truth, expected):
    assert math_reward(response, ground_truth, mode="lenient") == expected
    assert math_reward(response, ground_truth, mode="strict") == 0.0  # the last box alone is not the answer


@pytest.mark.parametrize(("response", "ground_truth"), FOREIGN_MARKERS)
def test_non_english_answer_markers_count_in_lenient_mode_only(response, ground_truth):
    assert math_reward(response, ground_truth, mode="lenient") == 1.0
    assert math_reward(response, "6", mode="lenient") == 0.0
    assert math_reward(response, ground_truth, mode="strict") == 0.0


@pytest.mark.parametrize(("pred", "gt"), [(r[len(B) + 1:-1], g) for table in BOTH_MODES.values()
                                          for r, g, s in table if s == 1.0 and r.startswith(B + "{") and r.endswith("}")
                                          and r.count(B) == 1])
def test_accepted_answers_are_accepted_as_ground_truths_too(pred, gt):
    """The dataset may store either form, so equivalence runs both ways."""
    assert answers_match(pred, gt) and answers_match(gt, pred)


@pytest.mark.parametrize(("pred", "gt", "expected"), [
    ("25\\%", "0.25", True), ("0.25", "25\\%", True), ("25\\%", "25", True), ("25\\%", "0.2", False),
    ("a parabola", "\\text{parabola}", True), ("the circle", "parabola", False),
    ("\\varnothing", "\\emptyset", True), ("∅", "\\emptyset", True),
    ("10001_2", "17", True), ("10001_2", "16", False), ("a_1", "1", False),
    ("x=5+5+1=7=11", "11", True), ("z=3+3=2", "z=1+1=2", True), ("x=5+5+1=7=12", "11", False),
    ("x^2+y^2=15", "15", True), ("4+6+12=22", "22", True), ("4+6+12=22", "12", False),
    ("S_{MBCN}:S=7:32", "7:32", True), ("|AB|=1", "1", True),
    ("\\frac{NO}{BO}=\\frac{1}{\\sqrt6}", "\\frac{1}{\\sqrt6}", True),
    ("x+y=5", "x-y=5", False),
    ("a_{37} = 2, a_3 = 19", "a_3 = 2, a_{37} = 19", False), ("a_{37} = 19, a_3 = 2", "a_3 = 2, a_{37} = 19", True),
    ("5, 4", "AB=4, CD=5", False), ("4, 5", "AB=4, CD=5", True),
    ("(3,17,3,7), (3,3,2,3), (3,17,3,7)", "(3,3,2,3),(3,17,3,7)", True),  # a set named twice
    ("(E) 27", "27", True), ("(E) 27", "E", True), ("(E) 27", "26", False),
    ("-x > -1", "x < 1", True), ("-x > -1", "x > 1", False), ("0<f(x)<1", "(0,1)", True),
    ("x >= 5", "[5, \\infty)", True), ("x != 3", "x \\neq 3", True),
    ("\\\\left(\\\\frac{1}{5},\\\\frac{1}{6}\\\\right)", "(\\frac15, \\frac16)", True),  # escaped twice
    ("((((((1))))))", "1", True), ("((((((1))))))", "2", False),
    ("(11,7)or(7,11)", "(7,11), (11,7)", True), ("19, 46, \\text{ and } 82", "19, 46, and 82", True),
    ("\\sec^2(y)", "\\tan^2(y)+1", True), ("\\sec^2(y)", "\\tan^2(y)", False),
    ("x^2/16 + y^2/12 = 1/4", "x^2/4 + y^2/3 = 1", True), ("x^2/16 + y^2/12 = 1/2", "x^2/4 + y^2/3 = 1", False),
    ("\\begin{pmatrix}0.33\\\\0.2\\end{pmatrix}", "\\begin{pmatrix}\\frac13\\\\\\frac15\\end{pmatrix}", False),
    ("\\int_0^1 x\\,dx", "\\frac{1}{2}", False),  # an unevaluated integral is not worked out
])
def test_equivalence_rules(pred, gt, expected):
    assert answers_match(pred, gt) is expected


@pytest.mark.parametrize(("pred", "gt", "expected"), [
    ("x = 4, y = 7", "(4,7)", True), ("y = 7, x = 4", "(4,7)", False), ("x = 4, x = 7", "(4,7)", False),
    ("4, 7", "(4,7)", False),  # a bare list is a set of answers, not an ordered pair
])
def test_named_values_read_as_a_tuple_in_their_order(pred, gt, expected):
    assert answers_match(pred, gt) is expected
