"""Evaluation results as JSON and as a Markdown table, written next to each other per step."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from megatron_grpo.eval.metrics import EvalMetrics, ProblemOutcome


def to_json(metrics: EvalMetrics) -> dict:
    """Plain-JSON view; ``overall`` is the micro mean over problems, ``macro`` the mean over sets."""
    return asdict(metrics)


def to_markdown(metrics: EvalMetrics) -> str:
    """One row per set, then overall (micro, over problems) and macro (over sets); values in percent."""
    keys = list(metrics.overall)
    total = sum(metrics.problems.values())
    rows = [(name, metrics.problems[name], vals) for name, vals in metrics.per_set.items()]
    rows += [("overall (micro)", total, metrics.overall), ("macro (mean of sets)", total, metrics.macro)]
    lines = [
        "| set | problems | " + " | ".join(keys) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in keys) + " |",
    ]
    lines += [f"| {name} | {p} | " + " | ".join(f"{100 * vals[k]:.2f}" for k in keys) + " |"
              for name, p, vals in rows]
    return "\n".join(lines) + "\n"


def write_report(metrics: EvalMetrics, outcomes: list[ProblemOutcome], out_dir: str | Path,
                 tag: str) -> Path:
    """``<out_dir>/<tag>.json`` (metrics and per-problem outcomes) and ``<tag>.md``; returns the JSON path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{tag}.json"
    payload = {"metrics": to_json(metrics), "problems": [asdict(o) for o in outcomes]}
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    (out / f"{tag}.md").write_text(to_markdown(metrics))
    return path
