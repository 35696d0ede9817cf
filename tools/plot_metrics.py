"""Plot a run's curves vs step to a PNG: reward with the train/inference mismatch beside it, validation
(every set's mean@k), response length, entropy.

    python tools/plot_metrics.py RUN_DIR [--out FILE.png] [--keys KEY[,KEY...] ...]

Reads ``RUN_DIR/metrics.jsonl`` (one JSON object per step, written by the trainer). Each ``--keys``
argument is one panel; keys joined by commas share a panel, and a key with ``*`` stands for every key it
matches (``eval/*/mean@*``). Keys absent from the file are skipped with a note; null values (NaN/Inf
steps) leave gaps, and sparse series (validation every test_freq steps) are drawn with markers.
matplotlib is imported only to draw, so a missing or empty metrics file is reported even where matplotlib
is not installed.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from pathlib import Path

DEFAULT_PANELS = [["reward/mean"], ["mismatch/abs_logp", "rollout/logprob_abs_diff"], ["eval/*/mean@*"],
                  ["response_length/mean"], ["actor/entropy"]]


class PlotError(Exception):
    """A problem the user can fix (bad path, empty file, no plottable key, no matplotlib)."""


def load_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise PlotError(f"{path}: no such file (is RUN_DIR a training run directory?)")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise PlotError(f"{path}:{number}: not JSON ({exc})") from None
    if not rows:
        raise PlotError(f"{path}: empty, no step logged yet")
    return rows


def collect(rows: list[dict], panels: list[list[str]]) -> tuple[list[list[tuple[str, list, list]]], list[str]]:
    """Per panel, the (key, steps, values) series present in ``rows``; and the keys found nowhere."""
    present, missing = [], []
    names = list(dict.fromkeys(k for r in rows for k in r))
    for keys in panels:
        series = []
        for key in _expand(keys, names):
            points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if points:
                series.append((key, [s for s, _ in points], [v for _, v in points]))
            else:
                missing.append(key)
        if series:
            present.append(series)
    if not present:
        raise PlotError(f"none of the keys {[k for keys in panels for k in keys]} has a value in the metrics")
    return present, missing


def _expand(keys: list[str], names: list[str]) -> list[str]:
    """Patterns replaced by the metric names they match (in file order); one matching nothing stays, to be
    reported missing."""
    out = []
    for key in keys:
        matched = [n for n in names if fnmatch.fnmatchcase(n, key)] if "*" in key else []
        out += matched or [key]
    return out


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotError("matplotlib is not installed in this environment; install it to plot "
                        "(`pip install matplotlib`), or read metrics.jsonl / TensorBoard logs directly") from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def draw(panels: list[list[tuple[str, list, list]]], title: str, out: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.4 * len(panels)), sharex=True, squeeze=False)
    for ax, series in zip(axes[:, 0], panels, strict=True):
        for key, steps, values in series:
            sparse = len(steps) < 2 or steps[-1] - steps[0] > 2 * (len(steps) - 1)
            ax.plot(steps, values, label=key, linewidth=1.2, marker="o" if sparse else None, markersize=3)
        ax.set_ylabel(series[0][0] if len(series) == 1 else "value")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="training run directory holding metrics.jsonl")
    parser.add_argument("--out", type=Path, default=None, help="PNG to write (default RUN_DIR/metrics.png)")
    parser.add_argument("--keys", nargs="+", default=None, metavar="KEY[,KEY...]",
                        help="panels to draw (default: reward, mismatch, validation, response length, entropy)")
    args = parser.parse_args(argv)
    panels = [k.split(",") for k in args.keys] if args.keys else DEFAULT_PANELS
    try:
        present, missing = collect(load_rows(args.run_dir / "metrics.jsonl"), panels)
        for key in missing:
            print(f"plot_metrics: note: '{key}' not in metrics, skipped", file=sys.stderr)
        out = args.out or args.run_dir / "metrics.png"
        draw(present, args.run_dir.name, out)
    except PlotError as exc:
        print(f"plot_metrics: error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
