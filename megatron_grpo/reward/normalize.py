"""Canonical string form of a math answer, and exact parsing of plain numbers.

``normalize_answer`` removes what does not change the value (LaTeX spacing and delimiters,
``\\left``/``\\right``, ``\\dfrac``, ``\\text{}`` wrappers and trailing units, degrees, percent, thousands
separators, ``x=`` prefixes, trailing periods) and writes plain numbers canonically
(``"025"``, ``"25.0"`` -> ``"25"``; ``"0.5"``, ``"\\frac{1}{2}"`` -> ``"1/2"``). Equal keys mean the same
answer, so the key serves maj@k voting and the cheap first test of grading; unequal keys are
settled by ``equivalence``.

Every step is a regex substitution or a linear scan: no step can blow up on adversarial input.
"""

from __future__ import annotations

import re
from fractions import Fraction

_UNICODE = {"−": "-", "–": "-", "π": "\\pi", "∞": "\\infty", "√": "\\sqrt", "×": "\\times", "·": "\\cdot",
            "°": "^\\circ", "≤": "\\le", "≥": "\\ge", "\u00a0": " "}
# \text-like wrappers whose content is kept; the content holds no braces after earlier unwrapping.
_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname|boxed|fbox)\s*"
                      r"\{([^{}]*)\}")
_TRAILING_TEXT_UNIT = re.compile(r"(?<=[\d}])\s*\\(?:text|mbox|mathrm)\s*\{\s*[a-zA-Z][a-zA-Z\s.^\d]*\}$")
_UNIT_WORDS = (
    "square", "sq", "units?", "cm", "mm", "km", "m", "meters?", "inches", "inch", "feet", "foot", "ft",
    "miles?", "mph", "hours?", "minutes?", "seconds?", "days?", "years?", "degrees?", "dollars?", "cents?",
    "points?", "ways", "students", "people", "digits?", "edges", "pounds?", "grams?", "kg", "liters?",
)
_TEXT_AND = re.compile(r"\\text\s*\{\s*and\s*\}")
# Unit words need a space before them: "2m" may be 2 times m, "2 m" is two metres.
_TRAILING_UNIT_WORDS = re.compile(r"(?<=[\d}])(?:\s+(?:" + "|".join(_UNIT_WORDS) + r")\b)+\.?$")
_THIN_SPACE_GROUPING = re.compile(r"(?<=\d)\\[,!;:](?=\d{3}(?!\d))")  # 3\,159 is 3159
_SPACING = re.compile(r"\\[,:;! ]|\\q?quad\b|\\displaystyle|~")
_LEFT_RIGHT = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])\.?")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\degree\b")
_FRAC_SHORTHAND = re.compile(r"\\frac\s*(\d)\s*(\d)")
_SQRT_SHORTHAND = re.compile(r"\\sqrt\s*(\d+)")
# A space between two letters/digits separates tokens ("\log_2 8", "\pi r"); elsewhere it is layout.
_LAYOUT_SPACE = re.compile(r"(?<![a-zA-Z0-9])\s+|\s+(?![a-zA-Z0-9])")
_VARIABLE_PREFIX = re.compile(
    r"^(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?[a-zA-Z0-9]+\}?)?(?:\([a-z]\))?(?:=|\\in(?![a-zA-Z]))"
)
_CHOICE = re.compile(r"^\(([A-Ea-e])\)$")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_DECIMAL = re.compile(r"^[+-]?(?:\d+\.\d*|\.\d+)$")
_FRACTION = re.compile(r"^([+-]?)(?:\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}|([+-]?\d+)/([+-]?\d+))$")
_MAX_NUMBER_DIGITS = 4000  # int() refuses > 4300 digits; such answers are compared as strings


def normalize_answer(answer: str) -> str:
    """Canonical key of ``answer``: equal keys for answers that are obviously the same."""
    text = _strip_markup(answer)
    number = parse_number(text)
    if number is not None:
        return _format_number(number)
    if re.fullmatch(r"[a-zA-Z ]+", text):
        return text.lower()
    return text


def parse_number(text: str) -> Fraction | None:
    """Exact value of a normalized plain number (integer, decimal, ``a/b``, ``\\frac{a}{b}``) or ``None``."""
    if len(text) > _MAX_NUMBER_DIGITS:
        return None
    if _INTEGER.match(text) or _DECIMAL.match(text):
        return Fraction(text)
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


def _strip_markup(answer: str) -> str:
    """The string-level normalization pipeline; the order matters where one step exposes another."""
    text = " ".join(answer.split())
    for old, new in _UNICODE.items():
        text = text.replace(old, new)
    text = _strip_delimiters(text)
    text = text.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    text = text.replace("{,}", ",").replace("\\{", "\\lbrace ").replace("\\}", "\\rbrace ")
    text = _TEXT_AND.sub(",", text)
    text = _SPACING.sub(" ", _THIN_SPACE_GROUPING.sub("", text))
    text = _LEFT_RIGHT.sub("", text)
    text = _DEGREES.sub("", text)
    text = _TRAILING_TEXT_UNIT.sub("", text)
    text = _unwrap(text).replace("\\lbrace", "\\{").replace("\\rbrace", "\\}")
    text = _TRAILING_UNIT_WORDS.sub("", text.strip())
    text = _LAYOUT_SPACE.sub("", text)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = _FRAC_SHORTHAND.sub(r"\\frac{\1}{\2}", text)
    text = _SQRT_SHORTHAND.sub(r"\\sqrt{\1}", text)
    text = _strip_ends(text)
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    if text.startswith("{") and text.endswith("}") and _outer_group_spans(text):
        text = text[1:-1]
    choice = _CHOICE.match(text)
    return choice.group(1) if choice else text


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
    """Trailing periods and a leading ``x=`` / ``x\\in`` (only when there is a single ``=``)."""
    text = text.rstrip(".")
    if text.count("=") <= 1:
        text = _VARIABLE_PREFIX.sub("", text)
    return text
