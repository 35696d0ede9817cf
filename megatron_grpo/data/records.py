"""The normalized in-memory record every data source is read into, and the errors/reports about it."""

from __future__ import annotations

from dataclasses import dataclass, field


class DataError(ValueError):
    """A data file cannot be used; the message names the file and, where it applies, the row and column."""


@dataclass(frozen=True)
class PromptRecord:
    """One problem, whatever file format it came from."""

    problem: str        # bare problem statement: any known prompt template removed
    prompt: str         # the file's prompt text unchanged (used by prompt_template="as_is")
    ground_truth: str   # reference answer as a string
    data_source: str    # file's data_source column, else the caller's default (file stem / eval set name)
    index: str          # the source's own id (extra_info.index, index or id column), else the row number
    row: int            # 0-based row in the source file (JSONL: 0-based among non-blank lines)


@dataclass(frozen=True)
class BadRow:
    """Why one row could not become a ``PromptRecord``."""

    file: str
    row: int            # 0-based, as in PromptRecord.row
    column: str         # the file's column name, e.g. "reward_model.ground_truth"
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: row {self.row}, column '{self.column}': {self.reason}"


@dataclass
class LoadReport:
    """What loading did to the rows: kept, skipped as bad, dropped as too long. Logged and returned."""

    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)   # skipped rows (on_bad_rows="skip")
    too_long: int = 0           # rows dropped because the prompt exceeds max_prompt_length tokens
    max_prompt_length: int | None = None
    kept: int = 0
    longest_prompt: int = 0     # tokens in the longest kept prompt

    def summary(self) -> str:
        limit = f" > {self.max_prompt_length} tokens" if self.max_prompt_length is not None else ""
        return (
            f"data: {self.rows_read} rows from {len(self.files)} file(s); "
            f"{len(self.bad_rows)} bad rows skipped; "
            f"{self.too_long} prompts too long{limit} dropped; {self.kept} kept "
            f"(longest kept prompt {self.longest_prompt} tokens)"
        )
