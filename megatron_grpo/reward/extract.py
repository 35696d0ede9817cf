"""Find the final answer in a model response.

Two formats are recognised, and whichever occurs *later* in the response wins:

- DAPO's ``Answer: ...`` line (the DAPO prompt asks for it as the last line);
- the last ``\\boxed{...}`` / ``\\fbox{...}`` (the reference prompt asks for it), braces matched with
  nesting and ``\\{``/``\\}`` escapes, plus the brace-less ``\\boxed 5``.

An ``Answer: \\boxed{5}`` line therefore yields ``5``. When neither is present the fallback applies:
``"none"`` gives ``None``; ``"last_number"`` takes the last number, for tasks whose responses are a bare
number. Only the last ``tail_chars`` characters are searched, so the cost is bounded whatever the response
length (verl's math_dapo looks at the last 300 characters; we default wider because boxed answers are
often followed by a short recap).
"""

from __future__ import annotations

import re
from typing import Literal

Fallback = Literal["none", "last_number"]
FALLBACKS: tuple[str, ...] = ("none", "last_number")
DEFAULT_TAIL_CHARS = 4096

# Disjoint character classes keep the match linear; one line break may follow the colon.
_ANSWER_LINE = re.compile(r"answer\**[ \t]*:[ \t*]*(?:\n[ \t*]*)?([^\s*][^\n]*)", re.IGNORECASE)
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_BRACE_OPEN = re.compile(r"[ \t]*\{")
_BARE_BOX_ARG = re.compile(r"[ \t]+([^\s$]+)")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def extract_answer(
    response: str, *, fallback: Fallback = "none", tail_chars: int = DEFAULT_TAIL_CHARS
) -> str | None:
    """The final answer of ``response`` as written (not normalized), or ``None`` when there is none."""
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    tail = response[-tail_chars:]
    candidates = [c for c in (_last_answer_line(tail), _last_box(tail)) if c is not None]
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
    return match.start(), match.group(1).strip().rstrip("*").strip()


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


def _braced_argument(text: str, open_at: int) -> str:
    """Content of the brace group opening at ``open_at``; '' when it never closes (truncated response)."""
    depth = 0
    i = open_at
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2  # \{ and \} are literal braces, not grouping
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1:i].strip()
        i += 1
    return ""


def _last_number(text: str) -> str | None:
    match = _last_match(_NUMBER, text)
    return match.group(0) if match else None


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(text):  # noqa: B007 - the loop only advances to the last match
        pass
    return last
