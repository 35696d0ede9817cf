"""Deduplication of prompts by normalized problem text, keeping the first occurrence.

DAPO-Math-17k repeats 495 problem texts under several indices (1,014 rows); in 7 of them the copies
disagree on the ground truth (shared/data/README.md §5). Those conflicts are reported, not resolved:
the first occurrence wins, and the report lists every answer seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from megatron_grpo.data.records import PromptRecord

DedupKey = Literal["exact", "whitespace", "none"]


def normalize_problem(problem: str, key: DedupKey) -> str:
    """exact: the bare problem text as is (reproduces the 17,398-row Processed set from the 17,917 file);
    whitespace: runs of whitespace collapsed and ends stripped (also merges copies that differ only in
    spacing). "none" never reaches this function."""
    return " ".join(problem.split()) if key == "whitespace" else problem


@dataclass(frozen=True)
class Conflict:
    """One duplicated problem whose copies disagree on the ground truth."""

    problem: str
    ground_truths: list[str]    # distinct answers, in order of first appearance; the first is kept
    indices: list[str]          # PromptRecord.index of every copy


@dataclass(frozen=True)
class DedupResult:
    kept: list[PromptRecord]
    dropped: int                    # rows removed as duplicates
    duplicated_problems: int        # distinct problems that had more than one copy
    conflicts: list[Conflict]


def dedup_records(records: list[PromptRecord], key: DedupKey) -> DedupResult:
    """Keep the first record of each normalized problem; report duplicates and answer conflicts."""
    if key == "none":
        return DedupResult(list(records), 0, 0, [])
    groups: dict[str, list[PromptRecord]] = {}
    for r in records:
        groups.setdefault(normalize_problem(r.problem, key), []).append(r)
    kept = [g[0] for g in groups.values()]
    dupes = [g for g in groups.values() if len(g) > 1]
    conflicts = [
        Conflict(g[0].problem, list(dict.fromkeys(r.ground_truth for r in g)), [r.index for r in g])
        for g in dupes if len({r.ground_truth for r in g}) > 1
    ]
    return DedupResult(kept, len(records) - len(kept), len(dupes), conflicts)
