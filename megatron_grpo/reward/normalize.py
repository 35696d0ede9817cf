"""Canonical string form of a math answer, and exact parsing of plain numbers.

``normalize_answer`` removes what does not change the value (LaTeX spacing and delimiters,
``\\left``/``\\right``, ``\\dfrac``, ``\\text{}`` wrappers and trailing units, degrees, percent, thousands
separators, named left sides such as ``x=``, trailing periods), writes plain numbers canonically
(``"025"``, ``"25.0"`` -> ``"25"``; ``"0.5"``, ``"\\frac{1}{2}"`` -> ``"1/2"``) and an inequality in one
variable as its interval (``x>3`` -> ``"(3,\\infty)"``). Equal keys mean the same
answer, so the key serves maj@k voting and the cheap first test of grading; unequal keys are
settled by ``equivalence``.

Every step is a regex substitution or a linear scan (atomic groups where alternatives could overlap): no
step can blow up on adversarial input.
"""

from __future__ import annotations

import re
from fractions import Fraction

_UNICODE = {"−": "-", "–": "-", "π": "\\pi", "∞": "\\infty", "√": "\\sqrt", "×": "\\times", "·": "\\cdot",
            "°": "^\\circ", "≤": "\\le", "≥": "\\ge", "⩽": "\\le", "⩾": "\\ge", "∈": "\\in", "∪": "\\cup",
            "ℝ": "\\mathbb{R}", "\\varnothing": "\\emptyset", "∅": "\\emptyset", "\u00a0": " "}
# \text-like wrappers whose content is kept; the content holds no braces after earlier unwrapping.
_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname|boxed|fbox)\s*"
                      r"\{([^{}]*)\}")
# a unit after a number, squared or cubed outside its braces too: "40\text{ m}^2"
_TRAILING_TEXT_UNIT = re.compile(
    r"(?<=[\d}])\s*\\(?:text|mbox|mathrm)\s*\{\s*[a-zA-Z][a-zA-Z\s.^\d]*\}(?:\^\{?[23]\}?)?$")
_UNIT_WORDS = (
    "square", "sq", "units?", "cm", "mm", "km", "m", "meters?", "inches", "inch", "feet", "foot", "ft",
    "miles?", "mph", "hours?", "minutes?", "seconds?", "days?", "years?", "degrees?", "dollars?", "cents?",
    "points?", "ways", "students", "people", "digits?", "edges", "pounds?", "grams?", "kg", "liters?",
)
# "and"/"or" between answers joins them into a list: "x = 1 \text{ or } x = 4" is "x=1, x=4"
_TEXT_AND = re.compile(r"\s*\\(?:text|mbox|textrm)\s*\{\s*(?:and|or)\s*\}\s*|\s+(?:and|or)\s+")
# Unit words need a space before them: "2m" may be 2 times m, "2 m" is two metres.
_TRAILING_UNIT_WORDS = re.compile(r"(?<=[\d}])(?:\s+(?:" + "|".join(_UNIT_WORDS) + r")\b)+\.?$")
_THIN_SPACE_GROUPING = re.compile(r"(?<=\d)\\[,!;:](?=\d{3}(?!\d))")  # 3\,159 is 3159
_SPACING = re.compile(r"\\[,:;! ]|\\q?quad\b|\\displaystyle|~")
_LEFT_RIGHT = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])\.?")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\degree\b")
# \frac12, \frac5{5}, \frac{5}5: a one-character argument may go without braces
_FRAC_SHORTHAND = re.compile(r"\\frac\s*(\d|\{[^{}]*\})\s*(\d|\{[^{}]*\})")
_SQRT_SHORTHAND = re.compile(r"\\sqrt\s*(\d+)")
# A space between two letters/digits separates tokens ("\log_2 8", "\pi r"); elsewhere it is layout.
_LAYOUT_SPACE = re.compile(r"(?<![a-zA-Z0-9])\s+|\s+(?![a-zA-Z0-9])")
# a named left side: letters, commands, subscripts, |AB|, ratios (V_1:V_2), f(x); no arithmetic, so
# "x+y=5" stays an equation. Atomic groups: "\\ab\\ab..." could otherwise split each command 2 ways
_VARIABLE_PREFIX = re.compile(
    r"^(?>[a-zA-Z|:{}()]|\\[a-zA-Z]++|_\{?[a-zA-Z0-9]++\}?)+?(?:=|\\approx(?![a-zA-Z])|\\in(?![a-zA-Z]))"
)
_ARTICLE = re.compile(r"^(?:an?|the) (?=\S)")
_DROPPED = ("\\$", "$", "€", "£", "\\%", "%")  # currency and percent signs; math-mode dollars
_RELATIONS = {">=": "\\ge ", "<=": "\\le ", "!=": "\\neq ", "=>": "\\Rightarrow "}
_GLUED_OR = re.compile(r"(?<=[)\]}])\s*or\s*(?=[(\[{])")  # (11,7)or(7,11)
_DOUBLED_BACKSLASH = re.compile(r"\\\\(?=[a-zA-Z])")
_TUPLE_PREFIX = re.compile(r"^\((?:[a-zA-Z](?:_\{?\w+\}?)?,)+[a-zA-Z](?:_\{?\w+\}?)?\)=(?=\()")  # (m,n)=(4,1)
_CHOICE = re.compile(r"^\(([A-Ea-e])\)$")
_SPACE_THOUSANDS = re.compile(r"^-?\d{1,3}(?: \d{3})+(?:\.\d+)?$")  # 1 000 000
# contested (docs/reward.md): a number followed by one or two words is the number ("5 apples")
_NUMBER_AND_WORDS = re.compile(r"^(-?[\d.,/]*\d)\s+[a-zA-Z]{2,}(?:\s+[a-zA-Z]{2,})?\.?$")
_MATRIX_ENV = re.compile(r"\\(begin|end)\{(?:array|bmatrix|Bmatrix|smallmatrix|matrix)\}(?:\{[clr|]*\})?")
_BRACKETED_MATRIX = re.compile(r"^[(\[](\\begin\{pmatrix\}.*\\end\{pmatrix\})[)\]]$")
_REAL_LINE = ("\\mathbb{R}", "\\R", "allrealnumbers", "\\mathbf{R}")
_INEQUALITY = re.compile(r"(<|>|\\[lg]eq?(?:slant)?(?![a-zA-Z]))")
_FLIPPED = {"<": ">", ">": "<", "\\le": "\\ge", "\\ge": "\\le"}  # by the operator's first three characters
_VARIABLE = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?(?:\([a-z]\))?$")
_NUMBER_WORDS = {word: i for i, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_REPEATING = re.compile(r"^([+-]?)(\d*)\.(\d*)\\overline\{(\d+)\}$")  # contested: 0.\overline{3} is 1/3
_BASE_SUBSCRIPT = re.compile(r"^([0-9A-Za-z]{1,64})_\{?(\d{1,2})\}?$")  # contested: 10001_2 is 17
_SCIENTIFIC = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)[eE][+-]?\d{1,3}$")  # contested: 1.5e3 is 1500
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_DECIMAL = re.compile(r"^[+-]?(?:\d+\.\d*|\.\d+)$")
_FRACTION = re.compile(r"^([+-]?)(?:\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}|([+-]?\d+)/([+-]?\d+))$")
_MAX_NUMBER_DIGITS = 4000  # int() refuses > 4300 digits; such answers are compared as strings


def normalize_answer(answer: str, *, keep_prefix: bool = False) -> str:
    """Canonical key of ``answer``: equal keys for answers that are obviously the same. ``keep_prefix``
    keeps a leading ``y=``, for comparing equations (``y=2x+1`` against ``2x-y+1=0``)."""
    text = _strip_markup(answer, keep_prefix)
    number = parse_number(text)
    if number is not None:
        return _format_number(number)
    if re.fullmatch(r"[a-zA-Z ]+", text):
        return _ARTICLE.sub("", text.lower())  # "a parabola" is "parabola"
    return _as_interval(text)


def parse_number(text: str) -> Fraction | None:
    """Exact value of a normalized plain number (integer, decimal, ``a/b``, ``\\frac{a}{b}``, and, contested,
    ``1.5e3``, ``0.\\overline{3}`` and the number words zero to twenty) or ``None``."""
    if len(text) > _MAX_NUMBER_DIGITS:
        return None
    if _INTEGER.match(text) or _DECIMAL.match(text) or _SCIENTIFIC.match(text):
        return Fraction(text)
    base = _BASE_SUBSCRIPT.match(text)
    if base and 2 <= int(base.group(2)) <= 36:
        try:
            return Fraction(int(base.group(1), int(base.group(2))))
        except ValueError:  # a digit the base does not have: a subscripted name
            return None
    if text.lower() in _NUMBER_WORDS:
        return Fraction(_NUMBER_WORDS[text.lower()])
    repeating = _REPEATING.match(text)
    if repeating:
        sign, whole, fixed, period = repeating.groups()
        value = Fraction(int(whole or "0")) + Fraction(int(fixed or "0"), 10 ** len(fixed))
        value += Fraction(int(period), (10 ** len(period) - 1) * 10 ** len(fixed))
        return -value if sign == "-" else value
    match = _FRACTION.match(text)
    if match is None:
        return None
    sign, num, den = match.group(1), match.group(2) or match.group(4), match.group(3) or match.group(5)
    if int(den) == 0:
        return None
    value = Fraction(int(num), int(den))
    return -value if sign == "-" else value


def _format_number(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator}/{value.denominator}"


def _strip_markup(answer: str, keep_prefix: bool = False) -> str:
    """The string-level normalization pipeline; the order matters where one step exposes another."""
    text = " ".join(answer.split())
    for old, new in _UNICODE.items():
        text = text.replace(old, new)
    for old, new in _RELATIONS.items():
        text = text.replace(old, new)
    if "matrix" not in text and "array" not in text:
        text = _DOUBLED_BACKSLASH.sub(lambda _: "\\", text)  # "\\\\left(" for "\\left(": escaped twice
    text = _strip_delimiters(text)
    for mark in _DROPPED:
        text = text.replace(mark, "")
    text = text.replace("{,}", ",").replace("{-}", "-").replace("{+}", "+")
    text = text.replace("\\{", "\\lbrace ").replace("\\}", "\\rbrace ")
    text = re.sub(r",\s*,", ",", _TEXT_AND.sub(",", _GLUED_OR.sub(",", text)))  # "19, 46, and 82"
    text = _SPACING.sub(" ", _THIN_SPACE_GROUPING.sub("", text))
    text = _LEFT_RIGHT.sub("", text)
    text = _DEGREES.sub("", text)
    text = _TRAILING_TEXT_UNIT.sub("", text)
    text = _unwrap(text).replace("\\lbrace", "\\{").replace("\\rbrace", "\\}")
    text = _TRAILING_UNIT_WORDS.sub("", text.strip())
    text = _NUMBER_AND_WORDS.sub(r"\1", text)
    if _SPACE_THOUSANDS.match(text):
        text = text.replace(" ", "")
    text = _LAYOUT_SPACE.sub("", text)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = _FRAC_SHORTHAND.sub(lambda m: f"\\frac{{{_unbrace(m.group(1))}}}{{{_unbrace(m.group(2))}}}", text)
    text = _SQRT_SHORTHAND.sub(r"\\sqrt{\1}", text)
    text = _MATRIX_ENV.sub(lambda m: f"\\{m.group(1)}{{pmatrix}}", text)
    text = _BRACKETED_MATRIX.sub(r"\1", text)
    text = (text.rstrip(".") if keep_prefix else _strip_ends(text)).replace(";", ",")
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    if text.startswith("{") and text.endswith("}") and _outer_group_spans(text):
        text = text[1:-1]
    choice = _CHOICE.match(text)
    return choice.group(1) if choice else _strip_parentheses(text)


def _strip_parentheses(text: str) -> str:
    """``((3))`` is 3: parentheses around something without brackets or commas group nothing."""
    depth = min(len(text) - len(text.lstrip("(")), len(text) - len(text.rstrip(")")))
    inner = text[depth:len(text) - depth]
    return inner if depth and inner and not any(c in inner for c in "()[],") else text


def split_assignment(text: str) -> tuple[str, str] | None:
    """``("a_3", "2")`` for a normalized ``a_3=2``; ``None`` when ``text`` is not one named value."""
    match = _VARIABLE_PREFIX.match(text)
    if match is None or text.count("=") != 1 or not match.group(0).endswith("="):
        return None
    return match.group(0)[:-1], text[match.end():]


def _unbrace(argument: str) -> str:
    return argument[1:-1] if argument.startswith("{") else argument


def _as_interval(text: str) -> str:
    """An inequality in one variable written as the interval it describes (``1\\le x<2`` is ``[1,2)``,
    ``x>3`` and ``3<x`` are ``(3,\\infty)``), the real line as ``(-\\infty,\\infty)``; a union for
    several comma-separated ones (what "x<1 or x>2" became). Anything else is returned unchanged."""
    if text in _REAL_LINE:
        return "(-\\infty,\\infty)"
    items = text.split(",") if "<" in text or ">" in text or "\\le" in text or "\\ge" in text else [text]
    intervals = [_inequality_interval(item) for item in items]
    if any(interval is None for interval in intervals):
        return text
    return "\\cup".join(intervals)


def _inequality_interval(text: str) -> str | None:
    parts = [part.strip() for part in _INEQUALITY.split(text)]  # [operand, operator, operand, ...]
    if len(parts) not in (3, 5) or not all(parts[::2]):
        return None
    operands, operators = parts[::2], parts[1::2]
    negated = [i for i, operand in enumerate(operands) if operand.startswith("-") and _VARIABLE.match(operand[1:])]
    if len(parts) == 3 and negated:  # -x > -1 is x < 1
        i = negated[0]
        operands = [o[1:] if j == i else (o[1:] if o.startswith("-") else "-" + o) for j, o in enumerate(operands)]
        operators = [_FLIPPED[operators[0][:3]]]
    variables = [i for i, operand in enumerate(operands) if _VARIABLE.match(operand)]
    if len(variables) != 1 or (len(parts) == 5 and variables != [1]):
        return None
    lower, upper = ("-\\infty", "("), ("\\infty", ")")
    where = variables[0]
    for i, operator in enumerate(operators):
        less = operator.startswith("<") or operator.startswith("\\le")
        strict = operator in "<>"
        bound = operands[i + 1] if i == where else operands[i]
        var_is_small = (i == where) == less  # "x < b" or "b > x": b is an upper bound
        if var_is_small:
            upper = (bound, ")" if strict else "]")
        else:
            lower = (bound, "(" if strict else "[")
    return f"{lower[1]}{lower[0]},{upper[0]}{upper[1]}"


def _strip_delimiters(text: str) -> str:
    """Math-mode delimiters around the whole answer: ``$..$``, ``\\(..\\)``, ``\\[..\\]``."""
    for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(left) and text.endswith(right):
            text = text[len(left):-len(right)].strip()
    return text


def _unwrap(text: str) -> str:
    """Replace ``\\text{x}``-like wrappers by ``x``, innermost first (bounded by the number of braces)."""
    for _ in range(text.count("{")):
        unwrapped = _WRAPPER.sub(r"\1", text)
        if unwrapped == text:
            break
        text = unwrapped
    return text


def _outer_group_spans(text: str) -> bool:
    """Whether the brace opened at ``text[0]`` closes at the last character (``{3}``, not ``{a}{b}``)."""
    depth = 0
    for i, char in enumerate(text):
        depth += (char == "{") - (char == "}")
        if depth == 0:
            return i == len(text) - 1
    return False


def _strip_ends(text: str) -> str:
    """Trailing periods and a leading ``x=`` / ``x\\in`` / ``(m,n)=`` (only when there is a single ``=``);
    a chain ``x=5+5+1=11`` ends on its value."""
    text = text.rstrip(".")
    if text.count("=") > 1 and "," not in text and _VARIABLE_PREFIX.match(text):
        text = text[text.rindex("=") + 1:]
    if text.count("=") <= 1:
        text = _TUPLE_PREFIX.sub("", _VARIABLE_PREFIX.sub("", text)).strip()
    return text
