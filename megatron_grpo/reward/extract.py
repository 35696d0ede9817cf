"""Find the final answer in a model response.

Two grading modes (``reward.mode``; docs/reward.md):

- ``strict`` (training, as the reference run): the answer must be on DAPO's ``Answer: ...`` line or in the
  last ``\\boxed{...}`` / ``\\fbox{...}`` (braces matched with nesting and ``\\{``/``\\}`` escapes, plus the
  brace-less ``\\boxed 5``); whichever occurs *later* wins, so ``Answer: \\boxed{5}`` yields ``5``. Minerva's
  ``Final Answer: The final answer is $X$. I hope it is correct.`` is an ``Answer:`` line whose answer is X.
- ``lenient`` (evaluation): the same, and several boxes that close the response together (``\\boxed{3},
  \\boxed{7}``) form one answer, ``3, 7``. Without a box or an ``Answer:`` line it also takes the last
  "the (final) answer is X" sentence, or a display-math block that ends the response.

When nothing is found the fallback applies: ``"none"`` gives ``None``; ``"last_number"`` takes the last
number, for tasks whose responses are a bare number. Only the last ``tail_chars`` characters are searched,
so the cost is bounded whatever the response length (verl's math_dapo looks at the last 300 characters;
we default wider because boxed answers are often followed by a short recap).
"""

from __future__ import annotations

import re
from typing import Literal

Fallback = Literal["none", "last_number"]
FALLBACKS: tuple[str, ...] = ("none", "last_number")
Mode = Literal["strict", "lenient"]
MODES: tuple[str, ...] = ("strict", "lenient")
DEFAULT_TAIL_CHARS = 4096
MAX_JOINED_BOXES = 8

# Disjoint character classes keep the match linear; one line break may follow the colon.
_ANSWER_LINE = re.compile(r"answer\**[ \t]*:[ \t*]*(?:\n[ \t*]*)?([^\s*][^\n]*)", re.IGNORECASE)
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_BRACE_OPEN = re.compile(r"[ \t]*\{")
_BARE_BOX_ARG = re.compile(r"[ \t]+([^\s$]+)")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
# Minerva's answer line: "Final Answer: The final answer is $24$. I hope it is correct."
_MINERVA = re.compile(r"^(?:the\s+)?final\s+answer\s+is\s*:?\s*(.*?)\s*(?:\.?\s*I\s+hope\s+it\s+is\s+correct\.?)?$",
                      re.IGNORECASE)
# lenient only: "the answer is X" sentences (X up to the sentence's end), and display math ending the text
_ANSWER_SENTENCE = re.compile(r"\banswer\s+is\s*:?\s*(\$[^$\n]{1,200}\$|[^\s$][^\n]{0,200}?)(?=\.?\s*(?:\n|$)|\.\s)",
                              re.IGNORECASE)
_TRAILING_DISPLAY = re.compile(r"(?:\\\[([^\n]{1,200}?)\\\]|\$\$([^$]{1,200}?)\$\$)\s*\.?\s*$")
# what may stand between boxes that answer together, on one line: commas, "and"/"or", math delimiters
_BOX_JOINER = re.compile(r"[ \t$,;]*(?:(?:\\text\s*\{\s*(?:and|or)\s*\}|and|or)[ \t$,;]*)?")


def extract_answer(
    response: str, *, mode: Mode = "strict", fallback: Fallback = "none", tail_chars: int = DEFAULT_TAIL_CHARS
) -> str | None:
    """The final answer of ``response`` as written (not normalized), or ``None`` when there is none."""
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    tail = response[-tail_chars:]
    box = _last_boxes(tail) if mode == "lenient" else _last_box(tail)
    candidates = [c for c in (_last_answer_line(tail), box) if c is not None]
    if not candidates and mode == "lenient":
        candidates = [c for c in (_last_answer_sentence(tail), _trailing_display(tail)) if c is not None]
    if candidates:
        _, answer = max(candidates)
        return answer or None
    if fallback == "last_number":
        return _last_number(tail)
    return None


def _last_answer_line(text: str) -> tuple[int, str] | None:
    """(position, content) of the last ``Answer: ...`` match."""
    match = _last_match(_ANSWER_LINE, text)
    if match is None:
        return None
    content = match.group(1).strip().rstrip("*").strip()
    minerva = _MINERVA.match(content)
    return match.start(), minerva.group(1) if minerva else content


def _last_answer_sentence(text: str) -> tuple[int, str] | None:
    match = _last_match(_ANSWER_SENTENCE, text)
    return None if match is None else (match.start(), match.group(1).strip())


def _trailing_display(text: str) -> tuple[int, str] | None:
    match = _TRAILING_DISPLAY.search(text)
    return None if match is None else (match.start(), (match.group(1) or match.group(2)).strip())


def _last_box(text: str) -> tuple[int, str] | None:
    """(position, argument) of the last ``\\boxed``/``\\fbox``; a box without a closing brace gives ''."""
    match = _last_match(_BOX_COMMAND, text)
    if match is None:
        return None
    brace = _BRACE_OPEN.match(text, match.end())
    if brace:
        return match.start(), _braced_argument(text, brace.end() - 1)
    bare = _BARE_BOX_ARG.match(text, match.end())
    return match.start(), bare.group(1) if bare else ""


def _last_boxes(text: str) -> tuple[int, str] | None:
    """Like ``_last_box``, but the boxes just before the last one on its line, separated only by commas,
    "and" or "or", are part of the answer: ``\\boxed{3}, \\boxed{7}`` gives ``3, 7``. At most
    ``MAX_JOINED_BOXES`` are looked at, which keeps the scan linear."""
    last = _last_box(text)
    if last is None:
        return None
    line = text.rfind("\n", 0, last[0]) + 1
    boxes: list[tuple[int, str, int]] = []
    on_line = [m for m in _BOX_COMMAND.finditer(text, line) if m.start() <= last[0]]
    for match in on_line[-MAX_JOINED_BOXES:]:
        brace = _BRACE_OPEN.match(text, match.end())
        end = _closing_brace(text, brace.end() - 1) if brace else None
        if end is None or (boxes and not _BOX_JOINER.fullmatch(text, boxes[-1][2], match.start())):
            boxes = []  # a box without braces, unclosed or not joined to those before starts over
        if end is not None:
            boxes.append((match.start(), text[brace.end():end - 1].strip(), end))
    if not boxes or boxes[-1][0] != last[0]:
        return last
    arguments = list(dict.fromkeys(argument for _, argument, _ in boxes))  # a box repeated is one answer
    return boxes[0][0], ", ".join(arguments)


def _braced_argument(text: str, open_at: int) -> str:
    """Content of the brace group opening at ``open_at``; '' when it never closes (truncated response)."""
    end = _closing_brace(text, open_at)
    return "" if end is None else text[open_at + 1:end - 1].strip()


def _closing_brace(text: str, open_at: int) -> int | None:
    """Index just past the brace closing the group that opens at ``open_at``; None when it never closes."""
    depth, i = 0, open_at
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        depth += (text[i] == "{") - (text[i] == "}")
        if depth == 0:
            return i + 1
        i += 1
    return None


def _last_number(text: str) -> str | None:
    match = _last_match(_NUMBER, text)
    return match.group(0) if match else None


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(text):  # noqa: B007 - the loop only advances to the last match
        pass
    return last
