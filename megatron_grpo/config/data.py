"""Training data, reward and evaluation config sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from megatron_grpo.config.loader import ConfigError


@dataclass(frozen=True)
class DataConfig:
    train_files: list[str] = field(default_factory=list)
    """Parquet/JSONL files of prompts with ground truths."""
    prompt_template: Literal["boxed", "dapo", "raw", "as_is"] = "as_is"
    """boxed: problem + 'Please reason step by step...\\boxed{}' (reference); dapo: DAPO's Answer: wrapping;
    raw: the problem alone; as_is: the file's prompt text unchanged."""
    chat_template: bool = True
    """Send the prompt as one user turn through the tokenizer's chat template."""
    enable_thinking: bool = False
    batch_prompts: int = 64
    """Prompts per rollout step (reference: 64)."""
    shuffle: bool = False
    """Reference: data.shuffle=False (file order)."""
    seed: int = 0
    on_bad_rows: Literal["reject", "skip"] = "reject"
    """Bad rows reject the file with an error listing them, or are skipped and counted."""

    def validate(self) -> None:
        if self.batch_prompts < 1:
            raise ConfigError(f"batch_prompts: must be >= 1, got {self.batch_prompts}")


@dataclass(frozen=True)
class EvalSetConfig:
    name: str
    path: str
    """JSONL with problem/answer, or parquet in the training format."""


@dataclass(frozen=True)
class EvalConfig:
    sets: list[EvalSetConfig] = field(default_factory=list)
    k: int = 16
    """mean@k / pass@k / maj@k use k samples per problem."""
    max_problems: int | None = None
    """Limit problems per set (quick checks)."""
