"""Symbolic equality of two scalar LaTeX answers, through latex2sympy2_extended and sympy.

This is the slow path, reached only when string keys and exact numbers cannot decide. Every input is
checked before sympy can spend unbounded time on it: long strings and deep brackets are refused before
parsing (the LaTeX parser is super-linear in bracket depth), and numbers that would take gigabytes
(``9^{9^{9^9}}``, ``(10^7)!``) are refused after parsing and before any evaluation. A refused answer
is simply not equal. The process pool in ``pool`` is the second line of defence: it kills a grader that
still runs past its time limit.
"""

from __future__ import annotations

import functools
import math
import re

import sympy
from latex2sympy2_extended import latex2sympy

MAX_CHARS = 200
MAX_BRACKET_DEPTH = 6
MAX_RESULT_BITS = 100_000  # 2^100000 still evaluates in microseconds
MAX_FACTORIAL = 1_000
EXACT_REL_TOL = sympy.Float("1e-12", 30)
DECIMAL_REL_TOL = sympy.Float("1e-6", 30)
_PRECISION = 30
_ZERO = sympy.Float("1e-25", 30)
_PROBE_POINTS = 4
_UNEVALUATED_LATEX = re.compile(r"\\(?:int|iint|oint|lim|sum|prod)(?![a-zA-Z])")
_UNEVALUATED = (sympy.Integral, sympy.Limit, sympy.Derivative, sympy.Sum, sympy.Product)
_PROBE_TOL = 1e-9


def symbolic_equal(pred: str, gt: str) -> bool:
    """True when the normalized answers ``pred`` and ``gt`` denote the same value, expression or equation."""
    a = to_sympy(pred)
    b = to_sympy(gt)
    if a is None or b is None:
        return False
    try:
        return _sympy_equal(a, b)
    except (TypeError, ValueError, ArithmeticError, RecursionError, AttributeError):
        return False  # sympy raises these on mixed kinds (sets vs numbers, relations, ...)


# LaTeX constructs of competition answers. ANTLR builds its prediction cache as it parses, and in a fresh
# process the first parse of each construct costs up to ~100x a warm one; parsing these once when a worker
# starts keeps that out of the first training step.
WARM_UP = (
    "\\frac{1}{2}", "-\\frac{3}{4}x+\\frac{1}{2}", "2\\sqrt{3}", "\\sqrt[3]{x^2-2}^2", "\\frac{\\sqrt{2}}{2}",
    "\\frac{2\\pi}{3}", "10^{\\frac{\\sqrt{13}-5}{6}}", "x^{2/3}", "e^{-t}", "3x^2+2x-1", "(x-1)(x+2y)",
    "\\sin^2(x)+\\cos(2y)", "\\tan^2(y)+1", "\\sec(x)", "\\log_2 8", "\\ln(x)", "|x-1|", "5!", "\\binom{5}{2}",
    "y=2x+1", "x^2/16+y^2/12=1", "f(x)", "a_{37}", "3\\cdot 4", "2\\times 10^{3}", "1.5", "\\infty",
    "\\begin{pmatrix}1&-\\frac{7}{4}\\\\\\sin(x)&0\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}",
)


def warm_up() -> None:
    """Parse ``WARM_UP`` (a second or two, once per process)."""
    for text in WARM_UP:
        to_sympy(text)


@functools.lru_cache(maxsize=4096)
def to_sympy(text: str) -> sympy.Basic | None:
    """Parsed ``text``, or ``None`` when it is too big to handle safely or does not parse. Cached: the
    responses of a GRPO group share their ground truth, and parsing is most of the cost of grading."""
    if len(text) > MAX_CHARS or bracket_depth(text) > MAX_BRACKET_DEPTH or _UNEVALUATED_LATEX.search(text):
        return None
    try:
        expr = latex2sympy(text, normalization_config=None)
    except Exception:  # the parser raises many unrelated types on malformed LaTeX
        return None
    if isinstance(expr, sympy.MatrixBase):
        expr = sympy.ImmutableMatrix(expr)  # pmatrix parses as a mutable matrix, which is not a Basic
    if not isinstance(expr, sympy.Basic) or _too_big(expr) or expr.has(sympy.zoo, sympy.nan):
        return None  # an undefined value ("3:00" parses as 3/0) equals nothing, not every other one
    if expr.has(*_UNEVALUATED):
        return None  # an answer left as an integral or a limit is not worked out (and evaluating it takes seconds)
    return expr


def bracket_depth(text: str) -> int:
    depth = deepest = 0
    for char in text:
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    return deepest


def _too_big(expr: sympy.Basic) -> bool:
    """Whether evaluating ``expr`` could build a huge integer; inner nodes are checked before outer ones."""
    for node in sympy.postorder_traversal(expr):
        if isinstance(node, sympy.Pow) and _pow_bits(node) > MAX_RESULT_BITS:
            return True
        if isinstance(node, sympy.factorial) and _magnitude(node.args[0]) > MAX_FACTORIAL:
            return True
    return False


def _pow_bits(node: sympy.Pow) -> float:
    """Rough size in bits of ``base ** exp``; inf when unknown but numeric (a tower of powers)."""
    base, exp = node.args
    if exp.free_symbols or base.free_symbols:
        return 0.0
    base_bits = max(1.0, math.log2(_magnitude(base) + 1)) if base.is_Number else 1.0
    return _magnitude(exp) * base_bits


def _magnitude(expr: sympy.Basic) -> float:
    """|expr| as a float, inf when it cannot be estimated; only called on already size-checked children."""
    if expr.free_symbols:
        return 0.0
    value = expr.evalf(15)
    if not value.is_number or not value.is_finite:
        return math.inf
    try:
        return float(abs(value))
    except (TypeError, OverflowError):
        return math.inf


def _sympy_equal(a: sympy.Basic, b: sympy.Basic) -> bool:
    if a == b:
        return True
    if isinstance(a, sympy.Eq) and isinstance(b, sympy.Eq):
        return _same_equation(a.lhs - a.rhs, b.lhs - b.rhs)
    if isinstance(a, sympy.MatrixBase) and isinstance(b, sympy.MatrixBase):
        return a.shape == b.shape and all(_sympy_equal(x, y) for x, y in zip(a, b, strict=True))
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return False
    if a.free_symbols != b.free_symbols:
        return False  # "2" vs "2x", "x+1" vs "y+1"
    if not a.free_symbols:
        return _numbers_close(a, b)
    ratios = _probe_ratios(a - b, a + b)
    if ratios is not None:
        return all(abs(r) < _PROBE_TOL for r in ratios)
    return _is_zero(a - b)


def _same_equation(da: sympy.Expr, db: sympy.Expr) -> bool:
    """``da = 0`` and ``db = 0`` are the same equation when one is a nonzero constant times the other:
    ``x = y`` is ``y = x``, and ``y = 2x + 1`` is ``4x - 2y + 2 = 0``."""
    if db == 0 or da == 0:
        return da == db
    ratios = _probe_ratios(da, db)
    if ratios is not None:
        return all(abs(r - ratios[0]) < _PROBE_TOL * abs(ratios[0]) for r in ratios) and abs(ratios[0]) > _PROBE_TOL
    if _is_zero(da - db) or _is_zero(da + db):
        return True
    ratio = sympy.simplify(da / db)
    return bool(ratio.is_number and ratio.is_finite and ratio != 0)


def _probe_ratios(num: sympy.Expr, den: sympy.Expr) -> list[complex] | None:
    """``num / den`` at a few fixed points, for deciding identities by evaluation instead of ``simplify``
    (seconds on some wrong answers): two expressions agreeing at several unrelated irrational points are the
    same function. ``None`` when a point is undefined for either, or a symbol is not a plain variable."""
    symbols = sorted(num.free_symbols | den.free_symbols, key=str)
    if not symbols or any(not isinstance(symbol, sympy.Symbol) for symbol in symbols):
        return None
    ratios = []
    for point in range(_PROBE_POINTS):
        values = {symbol: sympy.Float(0.5 + 0.6180339887 * ((point * 7 + i * 3) % 11) / 11 + 0.1 * point, 30)
                  for i, symbol in enumerate(symbols)}
        try:
            n, d = complex(num.evalf(30, subs=values)), complex(den.evalf(30, subs=values))
        except (TypeError, ValueError, ArithmeticError, RecursionError, AttributeError):
            return None
        if not (math.isfinite(abs(n)) and math.isfinite(abs(d))) or abs(d) < _PROBE_TOL:
            return None
        ratios.append(n / d)
    return ratios


def _numbers_close(pred: sympy.Expr, gt: sympy.Expr) -> bool:
    """Numeric comparison at 30 digits: exact-ish (1e-12) unless a decimal is involved and gt is not an
    integer, then 1e-6 relative, since a decimal written by the model is already rounded."""
    diff = (pred - gt).evalf(_PRECISION)
    scale = gt.evalf(_PRECISION)
    if not (diff.is_number and scale.is_number and diff.is_finite and scale.is_finite):
        return False  # oo - (-oo) is oo, which no tolerance should accept
    has_decimal = pred.has(sympy.Float) or gt.has(sympy.Float)
    tol = DECIMAL_REL_TOL if has_decimal and not gt.is_Integer else EXACT_REL_TOL
    if scale == 0:  # only an absolute tolerance works around 0; elsewhere it accepted 1/2^98 for 1/2^99
        return bool(abs(diff) < _ZERO)
    return bool(abs(diff) <= tol * abs(scale))


def _is_zero(expr: sympy.Expr) -> bool:
    return expr.expand() == 0 or sympy.simplify(expr) == 0
