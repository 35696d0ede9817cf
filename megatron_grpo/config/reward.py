"""Reward config section."""

from __future__ import annotations

from dataclasses import dataclass

from megatron_grpo.config.loader import ConfigError


@dataclass(frozen=True)
class RewardConfig:
    incorrect_score: float = 0.0
    """Score of a wrong or missing answer (DAPO uses -1.0; reference 0.0)."""
    correct_score: float = 1.0
    timeout_s: float = 5.0
    """Per-response grading time limit; a response that exceeds it scores incorrect."""
    workers: int | None = None
    """Grading processes (``None`` = min(4, cpu count))."""
    tail_chars: int = 4096
    """Only the last N characters of a response are searched for the answer."""

    def validate(self) -> None:
        if self.timeout_s <= 0 or self.tail_chars < 1:
            raise ConfigError("timeout_s must be > 0 and tail_chars >= 1")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers: must be >= 1, got {self.workers}")
