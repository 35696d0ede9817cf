"""Is a predicted answer the same as the ground truth? Cheap tests first, sympy last.

1. equal ``normalize_answer`` keys;
2. collections (tuples, intervals, sets, bare lists, unions) are split at top-level commas and compared
   element by element; the brackets must agree exactly, so ``(1,2)`` != ``[1,2]`` != ``(1,2]``.
   Sets, bare lists (``x = 1, 2``) and unions are unordered; tuples and intervals are ordered;
3. plain numbers compare exactly as fractions (``"025"`` == ``"25"``, ``"0.5"`` == ``"\\frac{1}{2}"``);
   a non-integer ground truth accepts a relative error of 1e-6, an integer one none;
4. text answers (letters only) compare by key only, and a number never equals an expression with a
   free variable (``"2"`` != ``"2x"``): both without sympy;
5. otherwise ``symbolic.symbolic_equal``.

Almost every competition answer is an integer, so steps 1-4 decide nearly all responses in microseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from megatron_grpo.reward.normalize import normalize_answer, parse_number
from megatron_grpo.reward.symbolic import symbolic_equal

REL_TOL = Fraction(1, 10**6)
MAX_ITEMS = 16
_OPENERS = {"(": ")", "[": "]", "\\{": "\\}"}
_CLOSERS = (")", "]", "\\}")
_UNORDERED = ("set", "union")
_WORD = re.compile(r"[a-z ]+")
_COMMAND = re.compile(r"\\[a-zA-Z]+")


@dataclass(frozen=True)
class Collection:
    kind: str
    """Bracket pair such as ``"(]"``, or ``"set"`` (``\\{..\\}`` and bare lists) or ``"union"``."""
    items: tuple[str, ...]


def answers_match(pred: str, gt: str) -> bool:
    """Whether answer ``pred`` equals ground truth ``gt`` (the order matters for tolerances only)."""
    p, g = normalize_answer(pred), normalize_answer(gt)
    if p == g:
        return True
    pc, gc = split_collection(p), split_collection(g)
    if pc is not None or gc is not None:
        return pc is not None and gc is not None and _collections_match(pc, gc)
    return _scalars_match(p, g)


def split_collection(text: str) -> Collection | None:
    """The top-level structure of a normalized answer, or ``None`` for a scalar."""
    union = _split_top_level(text, "\\cup")
    if len(union) > 1:
        return Collection("union", tuple(union))
    opener = next((o for o in _OPENERS if text.startswith(o)), None)
    closer = next((c for c in _CLOSERS if text.endswith(c)), None)
    if opener and closer and _closes_at_end(text):
        items = _split_top_level(text[len(opener):-len(closer)], ",")
        if len(items) > 1:
            kind = "set" if opener == "\\{" and closer == "\\}" else opener + closer
            return Collection(kind, tuple(items))
        return None
    items = _split_top_level(text, ",")
    return Collection("set", tuple(items)) if len(items) > 1 else None


def _split_top_level(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` occurrences outside any bracket."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        if text.startswith(separator, i) and depth == 0:
            parts.append(text[start:i])
            i += len(separator)
            start = i
            continue
        if text[i] in "([{":
            depth += 1
        elif text[i] in ")]}":
            depth -= 1
        i += 1
    parts.append(text[start:])
    return parts


def _closes_at_end(text: str) -> bool:
    """Whether the first bracket of ``text`` is closed by its last character (not ``(1)+(2)``)."""
    depth = 0
    for i, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                return i == len(text) - 1
    return False


def _collections_match(pred: Collection, gt: Collection) -> bool:
    if pred.kind != gt.kind or len(pred.items) != len(gt.items) or len(gt.items) > MAX_ITEMS:
        return False
    if gt.kind not in _UNORDERED:
        return all(answers_match(p, g) for p, g in zip(pred.items, gt.items, strict=True))
    unmatched = list(gt.items)
    for p in pred.items:
        hit = next((i for i, g in enumerate(unmatched) if answers_match(p, g)), None)
        if hit is None:
            return False
        unmatched.pop(hit)
    return True


def _scalars_match(pred: str, gt: str) -> bool:
    p_num, g_num = parse_number(pred), parse_number(gt)
    if p_num is not None and g_num is not None:
        return numbers_match(p_num, g_num)
    if _WORD.fullmatch(pred) or _WORD.fullmatch(gt):
        return False
    if (p_num is not None and _has_variable(gt)) or (g_num is not None and _has_variable(pred)):
        return False
    return symbolic_equal(pred, gt)


def numbers_match(pred: Fraction, gt: Fraction) -> bool:
    """Exact for an integer ground truth; 1e-6 relative otherwise (the model may round 1/3 to 0.333333)."""
    if pred == gt:
        return True
    return gt.denominator != 1 and abs(pred - gt) <= REL_TOL * abs(gt)


def _has_variable(text: str) -> bool:
    """A letter outside LaTeX command names (``\\pi``, ``\\sqrt``) is a free variable."""
    return any(c.isalpha() for c in _COMMAND.sub("", text))
