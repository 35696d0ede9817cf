"""Training data and evaluation config sections (the reward section is in ``reward.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from megatron_grpo.config.loader import ConfigError, check_seed


@dataclass(frozen=True)
class DataConfig:
    train_files: list[str] = field(default_factory=list)
    """Parquet/JSONL files of prompts with ground truths, concatenated in this order (docs/data.md)."""
    prompt_template: Literal["boxed", "dapo", "raw", "as_is"] = "as_is"
    """boxed: problem + 'Please reason step by step...\\boxed{}' (reference); dapo: DAPO's Answer: wrapping;
    raw: the problem alone; as_is: the file's prompt text unchanged. Any template already in the file is
    removed first, so every template works with every file."""
    chat_template: bool = True
    """Send the prompt as one user turn through the tokenizer's chat template."""
    enable_thinking: bool = False
    """Passed to the chat template; the reference uses False (an empty <think></think> block is prefilled)."""
    batch_prompts: int = 64
    """Prompts per rollout step over all data-parallel ranks (reference: 64)."""
    shuffle: bool = False
    """Shuffle the prompts each epoch; the reference uses data.shuffle=False (file order)."""
    seed: int = 0
    """Seed of the per-epoch shuffle (the order of epoch e depends only on seed, e and the data size)."""
    on_bad_rows: Literal["reject", "skip"] = "reject"
    """Bad rows (null/empty ground truth, non-string prompt, empty problem) reject the file with an error
    listing them, or are skipped and counted in the load report."""

    def validate(self) -> None:
        check_seed(self.seed)
        if self.batch_prompts < 1:
            raise ConfigError(f"batch_prompts: must be >= 1, got {self.batch_prompts}")
        empty = [i for i, p in enumerate(self.train_files) if not p.strip()]
        if empty:
            raise ConfigError(f"train_files[{empty[0]}]: empty path")


@dataclass(frozen=True)
class EvalSetConfig:
    name: str
    """Set name used in metric keys (eval/<name>/mean@16) and reports."""
    path: str
    """JSONL with problem/answer, or any file the training loader reads."""

    def validate(self) -> None:
        if not self.name.strip() or "/" in self.name:
            raise ConfigError(f"name: must be non-empty and contain no '/', got {self.name!r}")
        if not self.path.strip():
            raise ConfigError("path: empty path")


@dataclass(frozen=True)
class EvalConfig:
    sets: list[EvalSetConfig] = field(default_factory=list)
    """Evaluation sets; prompts are built with the data section's template and chat settings."""
    k: int = 16
    """pass@k and maj@k are reported for k = 1, 2, 4, ... and k itself; must be <= the n samples drawn
    (rollout.val.n). mean@n always averages all n samples."""
    max_problems: int | None = None
    """Limit problems per set, first ones in file order (quick checks)."""
    seed: int = 0
    """Sampling seed given to the rollout engine for evaluation."""

    def validate(self) -> None:
        check_seed(self.seed)
        if self.k < 1:
            raise ConfigError(f"k: must be >= 1, got {self.k}")
        if self.max_problems is not None and self.max_problems < 1:
            raise ConfigError(f"max_problems: must be >= 1, got {self.max_problems}")
        names = [s.name for s in self.sets]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"sets: duplicate set names {dup}")
