"""Symbolic equality of two scalar LaTeX answers, through latex2sympy2_extended and sympy.

This is the slow path, reached only when string keys and exact numbers cannot decide. Every input is
checked before sympy can spend unbounded time on it: long strings and deep brackets are refused before
parsing (the LaTeX parser is super-linear in bracket depth), and numbers that would take gigabytes
(``9^{9^{9^9}}``, ``(10^7)!``) are refused after parsing and before any evaluation. A refused answer
is simply not equal. The process pool in ``pool`` is the second line of defence: it kills a grader that
still runs past its time limit.
"""

from __future__ import annotations

import math

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


def to_sympy(text: str) -> sympy.Basic | None:
    """Parsed ``text``, or ``None`` when it is too big to handle safely or does not parse."""
    if len(text) > MAX_CHARS or bracket_depth(text) > MAX_BRACKET_DEPTH:
        return None
    try:
        expr = latex2sympy(text, normalization_config=None)
    except Exception:  # the parser raises many unrelated types on malformed LaTeX
        return None
    if not isinstance(expr, sympy.Basic) or _too_big(expr) or expr.has(sympy.zoo, sympy.nan):
        return None  # an undefined value ("3:00" parses as 3/0) equals nothing, not every other one
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
        da, db = a.lhs - a.rhs, b.lhs - b.rhs
        return _is_zero(da - db) or _is_zero(da + db)  # x = y and y = x state the same equation
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return False
    if a.free_symbols != b.free_symbols:
        return False  # "2" vs "2x", "x+1" vs "y+1"
    if not a.free_symbols:
        return _numbers_close(a, b)
    return _is_zero(a - b)


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
