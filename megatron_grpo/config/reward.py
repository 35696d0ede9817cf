"""Reward config section."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from megatron_grpo.config.loader import ConfigError


@dataclass(frozen=True)
class RewardConfig:
    correct_score: float = 1.0
    """Score of a correct final answer (reference: 1.0)."""
    incorrect_score: float = 0.0
    """Score of a wrong or missing answer, and of a response whose grading timed out (DAPO uses -1.0;
    reference 0.0)."""
    mode: Literal["strict", "lenient"] = "strict"
    """Where the training reward looks for the final answer: ``strict``, only in ``\\boxed{}`` or on an
    ``Answer:`` line (the reference run); ``lenient`` also takes Minerva's format, "the final answer is X",
    a closing display-math block, and several closing boxes as one answer (docs/reward.md)."""
    eval_mode: Literal["strict", "lenient"] = "lenient"
    """The same for validation and ``megatron-grpo eval``: lenient by default, as published mean@k figures
    are graded."""
    fallback: Literal["none", "last_number"] = "none"
    """Without an ``Answer:`` line or ``\\boxed{}``: no answer (reference), or the last number in the
    response (for tasks whose model answers with a bare number, like the tiny CPU demo)."""
    timeout_s: float = 5.0
    """Per-response grading time limit; a response that exceeds it scores incorrect (OPD's sympy: 5 s)."""
    workers: int | None = None
    """Grading processes (``None`` = min(4, cpu count))."""
    start_method: Literal["forkserver", "spawn"] = "forkserver"
    """How grading processes start; never 'fork', which is unsafe in the threaded trainer process."""
    tail_chars: int = 4096
    """Only the last N characters of a response are searched for the answer (verl math_dapo: 300)."""
    function: str | None = None
    """Your own training reward, ``path/to/file.py:name``, with verl's signature ``name(data_source,
    solution_str, ground_truth, extra_info=None) -> float | dict`` (``reward/user.py``; a dict holds
    ``score`` and extra numbers to log). A path in a config file is relative to the file."""
    on_error: Literal["incorrect", "abort"] = "incorrect"
    """When a call of ``function`` hangs past ``timeout_s``, crashes its worker, raises or returns no number:
    ``incorrect`` scores it ``incorrect_score`` and logs a warning naming the file and function; ``abort``
    stops the run with that message. A file that does not import always stops the run at start."""

    def validate(self) -> None:
        _check_positive_limits(self)
        _check_scores(self)
        _check_function(self)


def _check_positive_limits(cfg: RewardConfig) -> None:
    if cfg.timeout_s <= 0:
        raise ConfigError(f"timeout_s: must be > 0, got {cfg.timeout_s}")
    if cfg.tail_chars < 1:
        raise ConfigError(f"tail_chars: must be >= 1, got {cfg.tail_chars}")
    if cfg.workers is not None and cfg.workers < 1:
        raise ConfigError(f"workers: must be >= 1, got {cfg.workers}")


def split_function(spec: str) -> tuple[str, str]:
    """``"dir/file.py:name"`` -> (path, name); a path without ``:name`` is refused (verl's default name
    differs by version)."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name.isidentifier():
        raise ValueError(f"'{spec}' is not 'path/to/file.py:function_name'")
    return path, name


def _check_function(cfg: RewardConfig) -> None:
    if cfg.function is None:
        return
    try:
        path, _ = split_function(cfg.function)
    except ValueError as exc:
        raise ConfigError(f"function: {exc}") from None
    if not Path(path).is_file():
        raise ConfigError(f"function: {path}: no such file")


def _check_scores(cfg: RewardConfig) -> None:
    if cfg.correct_score <= cfg.incorrect_score:
        raise ConfigError(
            f"correct_score ({cfg.correct_score}) must exceed incorrect_score ({cfg.incorrect_score})"
        )
    if cfg.fallback not in ("none", "last_number"):
        raise ConfigError(f"fallback: must be 'none' or 'last_number', got {cfg.fallback!r}")
