"""Find the final answer in a model response.

Two grading modes (``reward.mode``; docs/reward.md):

- ``strict`` (training, as the reference run): the answer must be on an answer line (DAPO's ``Answer: ...``,
  Minerva's ``Final Answer: The final answer is $X$. I hope it is correct.``, whose answer is X, GSM8K's
  ``#### X``) or in the last ``\\boxed{...}`` / ``\\fbox{...}`` (braces matched with nesting and
  ``\\{``/``\\}`` escapes, plus the brace-less ``\\boxed 5``); whichever occurs *later* wins, so
  ``Answer: \\boxed{5}`` yields ``5``.
- ``lenient`` (evaluation): the same, and several boxes that close the response together (``\\boxed{3},
  \\boxed{7}``) form one answer, ``3, 7``. Without a box or an answer line it also takes, in order, the last
  "the answer is X" sentence, a display-math block ending the response, a response that is only an answer,
  inline math closing the last line, or a last line ending "... is X.".

A chat-template token (``<|im_end|>``) ends the response in both modes.
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
# "Answer:" opening a line or a sentence, after at most "the"/"my"/"final"/"correct" ("Let me check the
# answer: 12 = 3 * 4" is no answer line); GSM8K's "#### 42" is one too
_ANSWER_LINE = re.compile(
    r"(?:(?:^|(?<=\n)|(?<=[.!?$)]\s))[ \t>*#-]*(?:(?:the|my|final|correct)[ \t*]+){0,2}answer\**[ \t]*[:：]"
    r"|^####|(?<=\n)####)[ \t*]*(?:\n[ \t*]*)?([^\s*][^\n]*)", re.IGNORECASE)
# lenient only (contested, docs/reward.md): the same line with a Chinese, French, Spanish, Portuguese,
# German, Italian or Russian marker
_FOREIGN_ANSWER_LINE = re.compile(
    r"(?:最终答案|答案|réponse|respuesta|resposta|antwort|risposta|ответ)\**[ \t]*(?:[:：是为]|est|es|ist|è)"
    r"[ \t*]*(?:\n[ \t*]*)?([^\s*][^\n]*)", re.IGNORECASE)
# a chat-template token ("<|im_end|>", "<|im_start|>", "</s>") ends the turn: what follows is not the response
_END_OF_TURN = re.compile(r"<\|[^|<>\s]{1,40}\|>|<｜[^｜<>\s]{1,40}｜>|</s>|<eos>|<end_of_turn>")
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_BRACE_OPEN = re.compile(r"[ \t]*\{")
_BARE_BOX_ARG = re.compile(r"[ \t]+([^\s$]+)")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
# Minerva's answer line: "Final Answer: The final answer is $24$. I hope it is correct."
_MINERVA = re.compile(
    r"^(?:the\s+)?final\s+answer\s+is\s*:?\s*(.*?)\s*(?:\.?\s*I\s+hope\s+it\s+is\s+correct\b.*)?$", re.IGNORECASE)
# lenient only: "the answer is X" sentences (X up to the sentence's end), and display math ending the text
_ANSWER_SENTENCE = re.compile(
    r"\banswer\s+is\s*:?\s*(\$[^$\n]{1,200}\$|[^\s$][^\n]{0,200}?)(?=\.?\s*(?:\n|$)|\.\s)"
    r"|(\$[^$\n]{1,200}\$|[^\s$]{1,40}) is (?:the|our) (?:final )?answer\b", re.IGNORECASE)
_TRAILING_DISPLAY = re.compile(r"(?:\\\[([^\]]{1,200}?)\\\]|\$\$([^$]{1,200}?)\$\$)\s*\.?\s*$")
# lenient only, the last resorts: inline math closing the last line ("Therefore $x \ge 5$ is the solution."),
# a last sentence "... is X." with a short X, and a response that is nothing but an answer ("$-5$", "28 percent")
_CLOSING_INLINE_MATH = re.compile(
    r"(?:\$([^$\n]{1,200})\$|\\\(([^\n]{1,200}?)\\\))(?:[ \t]*[a-zA-Z,.;:!]+){0,6}[ \t.!]*$")
_IS = re.compile(r"(?:\bis|\bare|\bequals|=)\s+")
_CLOSING_CHARS = 40
_WORD = re.compile(r"[a-zA-Z]{2,}")
_LEADING_CHOICE = re.compile(r"^\(?([A-E])\)?[.:]\s")  # "A. Because B is not valid"
_MATH_JOINER = re.compile(r"\s*(?:,|;|,?\s*(?:and|or))\s*")
_INLINE_MATH = re.compile(r"\$[^$]*\$|\\\(.*?\\\)")
# what may stand between boxes that answer together, on one line: commas, "and"/"or", spacing, math delimiters
_SPACE = r"(?:[ \t$,;.]|\\q?quad|\\[,;:! ]|\\[()\[\]])*"
_BOX_JOINER = re.compile(_SPACE + r"(?:(?:\\text\s*\{\s*(?:and|or)\s*\}|and|or)" + _SPACE + r")?(?:[a-zA-Z]\s*=\s*)?")


def extract_answer(
    response: str, *, mode: Mode = "strict", fallback: Fallback = "none", tail_chars: int = DEFAULT_TAIL_CHARS
) -> str | None:
    """The final answer of ``response`` as written (not normalized), or ``None`` when there is none."""
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    end = _END_OF_TURN.search(response)
    tail = response[:end.start() if end else len(response)][-tail_chars:]
    lenient = mode == "lenient"
    box = _last_boxes(tail) if lenient else _last_box(tail)
    lines = (_last_answer_line(tail, _ANSWER_LINE), _last_answer_line(tail, _FOREIGN_ANSWER_LINE) if lenient else None)
    candidates = [c for c in (*lines, box) if c is not None]
    if not candidates and lenient:
        candidates = [c for c in (_last_answer_sentence(tail), _trailing_display(tail)) if c is not None]
    if not candidates and lenient:
        candidates = [c for c in (_closing_statement(tail),) if c is not None]
    if candidates:
        _, answer = max(candidates)
        return answer or None
    if fallback == "last_number":
        return _last_number(tail)
    return None


def _last_answer_line(text: str, pattern: re.Pattern[str]) -> tuple[int, str] | None:
    """(position, content) of the last ``Answer: ...`` match."""
    match = _last_match(pattern, text)
    if match is None:
        return None
    content = match.group(1).strip().rstrip("*").strip()
    minerva = _MINERVA.match(content)
    if minerva:
        return match.start(), minerva.group(1)
    if len(_WORD.findall(_INLINE_MATH.sub(" ", content))) >= 3:  # a sentence: "The largest $n$ is 34."
        closing = _closing_is(content)
        if closing:
            return match.start(), closing[1]
    return match.start(), content


def _last_answer_sentence(text: str) -> tuple[int, str] | None:
    match = _last_match(_ANSWER_SENTENCE, text)
    return None if match is None else (match.start(), (match.group(1) or match.group(2)).strip())


def _closing_statement(text: str) -> tuple[int, str] | None:
    """The answer a response ends on without marking it: the whole response when it is only an answer
    (at most two words outside math), else inline math closing the last line, else "... is X." there."""
    text = text.rstrip()
    line_start = text.rfind("\n") + 1
    last_line = text[line_start:]
    if len(text) <= 200:
        if len(_WORD.findall(_INLINE_MATH.sub(" ", text))) <= 2:
            math = _last_match(_INLINE_MATH, text)
            return 0, _math_content(math.group(0)) if math else text
        choice = _LEADING_CHOICE.match(text)
        if choice:
            return 0, choice.group(1)
    match = _CLOSING_INLINE_MATH.search(last_line)
    if match:
        start, answers = match.start(), [next(g for g in match.groups() if g is not None).strip()]
        for before in reversed(list(_INLINE_MATH.finditer(last_line, 0, start))[-MAX_JOINED_BOXES:]):
            if not _MATH_JOINER.fullmatch(last_line, before.end(), start):
                break  # "$x = 5$ or $x = -3$" is one answer, "$a$ is $b$" is not
            start = before.start()
            answers.insert(0, _math_content(before.group(0)))
        return line_start + start, ", ".join(answers)
    closing = _closing_is(last_line)
    return None if closing is None else (line_start + closing[0], closing[1])


def _math_content(math: str) -> str:
    """``$x$`` or ``\\(x\\)`` without its delimiters."""
    return math.strip("$").removeprefix("\\(").removesuffix("\\)").strip()


def _closing_is(line: str) -> tuple[int, str] | None:
    """(position, X) for a line ending "... is X." with a short X holding a number or math."""
    match = _last_match(_IS, line)
    value = "" if match is None else line[match.end():].strip().rstrip(".!").strip()
    mathy = any(c.isdigit() or c in "$\\" for c in value)  # "is not known yet" states no answer
    return (match.start(), value) if mathy and len(value) <= _CLOSING_CHARS else None


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
