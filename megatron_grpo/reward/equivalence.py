"""Is a predicted answer the same as the ground truth? Cheap tests first, sympy last.

1. equal ``normalize_answer`` keys;
2. special shapes: a percentage against a plain number (``25\\%`` is 0.25), a choice with its value
   (``(E) 27``), an equation stating a number (``x^2+y^2=15`` for 15), matrices cell by cell;
3. collections (tuples, intervals, sets, bare lists, unions, ``a\\pm b``) are split at top-level commas and
   compared element by element; the brackets must agree exactly, so ``(1,2)`` != ``[1,2]`` != ``(1,2]``.
   Sets, bare lists (``x = 1, 2``) and unions are unordered, duplicates dropped; named values
   (``a_3=2, a_{37}=19``) match by name; tuples and intervals are ordered;
4. plain numbers compare exactly as fractions (``"025"`` == ``"25"``, ``"0.5"`` == ``"\\frac{1}{2}"``);
   a non-integer ground truth accepts a relative error of 1e-6, an integer one none;
5. text answers (letters only) compare by key only, and a number never equals an expression with a
   free variable (``"2"`` != ``"2x"``), nor an equation an expression: all without sympy;
6. otherwise ``symbolic.symbolic_equal``, and equations whole when a ``y=`` was normalized away.

Almost every competition answer is an integer, so steps 1-4 decide nearly all responses in microseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from megatron_grpo.reward.normalize import normalize_answer, parse_number, split_assignment
from megatron_grpo.reward.symbolic import symbolic_equal

REL_TOL = Fraction(1, 10**6)
MAX_ITEMS = 16
MAX_CELLS = 64
_MATRIX = re.compile(r"\\begin\{pmatrix\}(.*)\\end\{pmatrix\}", re.DOTALL)
_OPENERS = {"(": ")", "[": "]", "\\{": "\\}"}
_CLOSERS = (")", "]", "\\}")
_UNORDERED = ("set", "union")
_WORD = re.compile(r"[a-z ]+")
_CHOICE_WITH_VALUE = re.compile(r"^\(?([A-Ea-e])\)(.+)$")
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
    if _is_percent(pred) != _is_percent(gt) and _percent_matches(pred, gt, p, g):
        return True
    choice = _CHOICE_WITH_VALUE.match(p)  # "(E) 27": the letter against a letter, else the value
    if choice:
        return choice.group(1).lower() == g if _WORD.fullmatch(g) else answers_match(choice.group(2), gt)
    if "=" in p and "," not in p and parse_number(g) is not None:  # "x^2+y^2=15" for 15: the value stated
        return answers_match(p[p.rindex("=") + 1:], gt)
    pm, gm = _matrix_cells(p), _matrix_cells(g)
    if pm is not None or gm is not None:  # cell by cell, each with the scalar rules (no matrix parse)
        return pm is not None and gm is not None and len(pm) == len(gm) and all(
            len(pr) == len(gr) and all(answers_match(a, b) for a, b in zip(pr, gr, strict=True))
            for pr, gr in zip(pm, gm, strict=True))
    pc, gc = split_collection(p), split_collection(g)
    if pc is not None or gc is not None:
        return pc is not None and gc is not None and _collections_match(pc, gc)
    return _scalars_match(p, g) or _equations_match(pred, gt, p, g)


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
    if len(items) > 1:
        return Collection("set", tuple(items))
    return _plus_minus(text)


def _plus_minus(text: str) -> Collection | None:
    """``a\\pm b`` is the set of ``a+b`` and ``a-b`` (one ``\\pm`` or ``\\mp``; more are ambiguous)."""
    signs = [sign for sign in ("\\pm", "\\mp") if sign in text]
    if len(signs) != 1 or text.count(signs[0]) != 1:
        return None
    return Collection("set", (text.replace(signs[0], "+"), text.replace(signs[0], "-")))


def _equations_match(pred: str, gt: str, p: str, g: str) -> bool:
    """Equations compared whole when normalization took a ``y=`` off one side: ``y=2x+1`` is
    ``2x-y+1=0``. Only reached when the keys differ and the scalar comparison failed."""
    pe, ge = normalize_answer(pred, keep_prefix=True), normalize_answer(gt, keep_prefix=True)
    if (pe, ge) == (p, g) or pe.count("=") != 1 or ge.count("=") != 1:
        return False
    return symbolic_equal(pe, ge)


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
    if pred.kind == "set" and gt.kind == "()" and len(pred.items) == len(gt.items):
        named = [split_assignment(item) for item in pred.items]
        if all(named) and len({name for name, _ in named}) == len(named):  # "x = 4, y = 7" for (4,7), in order
            return all(answers_match(value, g) for (_, value), g in zip(named, gt.items, strict=True))
    if pred.kind != gt.kind or len(gt.items) > MAX_ITEMS or len(pred.items) > MAX_ITEMS:
        return False
    if gt.kind not in _UNORDERED:
        return len(pred.items) == len(gt.items) and all(
            answers_match(p, g) for p, g in zip(pred.items, gt.items, strict=True))
    pred_items, gt_items = _distinct(pred.items), _distinct(gt.items)  # a set named twice is the same set
    if len(pred_items) != len(gt_items):
        return False
    named = [split_assignment(item) for item in pred_items + gt_items]
    if all(named[len(pred_items):]) and not any(named[:len(pred_items)]):  # "5, 4" for "AB=4, CD=5": in order
        return all(answers_match(p, g) for p, g in zip(pred_items, gt_items, strict=True))
    if all(named):  # "a_3=2, a_{37}=19": the values must match their names, not just each other
        pred_named, gt_named = named[:len(pred_items)], named[len(pred_items):]
        return sorted(n for n, _ in pred_named) == sorted(n for n, _ in gt_named) and all(
            answers_match(value, dict(gt_named)[name]) for name, value in pred_named)
    unmatched = list(gt_items)
    for p in pred_items:
        hit = next((i for i, g in enumerate(unmatched) if answers_match(p, g)), None)
        if hit is None:
            return False
        unmatched.pop(hit)
    return True


def _is_percent(text: str) -> bool:
    return "%" in text or "percent" in text.lower()


def _percent_matches(pred: str, gt: str, p: str, g: str) -> bool:
    """``25\\%`` for 0.25 (and 0.25 for ``25\\%``): the percent sign is a factor of 1/100 on its side."""
    p_num, g_num = parse_number(p), parse_number(g)
    if p_num is None or g_num is None:
        return False
    scale = Fraction(1, 100)
    return numbers_match(p_num * scale if _is_percent(pred) else p_num, g_num * scale if _is_percent(gt) else g_num)


def _matrix_cells(text: str) -> list[list[str]] | None:
    """Rows of cells of a normalized ``\\begin{pmatrix}..\\end{pmatrix}``; ``None`` for anything else."""
    match = _MATRIX.fullmatch(text)
    if match is None:
        return None
    rows = [row for row in match.group(1).split("\\\\") if row.strip()]  # a trailing \\ ends no row
    if len(rows) * max((row.count("&") + 1 for row in rows), default=0) > MAX_CELLS:
        return None
    return [[cell.strip() for cell in row.split("&")] for row in rows]


def _distinct(items: tuple[str, ...]) -> list[str]:
    return list({normalize_answer(item): item for item in items}.values())


def _scalars_match(pred: str, gt: str) -> bool:
    p_num, g_num = parse_number(pred), parse_number(gt)
    if p_num is not None and g_num is not None:
        return numbers_match(p_num, g_num)
    if _WORD.fullmatch(pred) or _WORD.fullmatch(gt):
        return False
    if (p_num is not None and _has_variable(gt)) or (g_num is not None and _has_variable(pred)):
        return False
    if ("=" in pred) != ("=" in gt):
        return False  # an equation never equals an expression (the other side's "y=" was stripped: see below)
    return symbolic_equal(pred, gt)


def numbers_match(pred: Fraction, gt: Fraction) -> bool:
    """Exact for an integer ground truth; 1e-6 relative otherwise (the model may round 1/3 to 0.333333)."""
    if pred == gt:
        return True
    return gt.denominator != 1 and abs(pred - gt) <= REL_TOL * abs(gt)


def _has_variable(text: str) -> bool:
    """A letter outside LaTeX command names (``\\pi``, ``\\sqrt``) is a free variable."""
    return any(c.isalpha() for c in _COMMAND.sub("", text))
