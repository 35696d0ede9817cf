"""tools/plot_metrics.py on a synthetic metrics.jsonl: a PNG where matplotlib exists, clear errors always."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "plot_metrics.py"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def plot_metrics():
    spec = importlib.util.spec_from_file_location("plot_metrics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_dir(tmp_path: Path, steps: int = 5) -> Path:
    """Steps with reward/length/entropy and one mismatch key; step 3's reward is null (a NaN step); validation
    of two sets at steps 2 and 4."""
    rows = [{"step": s, "reward/mean": None if s == 3 else s / 10, "response_length/mean": 1.0,
             "actor/entropy": 2.0 - s / 10, "mismatch/abs_logp": 1e-7,
             **({"eval/aime24/mean@4": s / 20, "eval/amc23/mean@4": s / 8, "eval/amc23/pass@4": 1.0} if s % 2 == 0
                else {})} for s in range(1, steps + 1)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_collect_skips_missing_keys_and_null_values(plot_metrics, tmp_path):
    rows = plot_metrics.load_rows(_run_dir(tmp_path) / "metrics.jsonl")
    panels, missing = plot_metrics.collect(rows, plot_metrics.DEFAULT_PANELS)
    assert missing == ["rollout/logprob_abs_diff"]
    assert [[key for key, _, _ in series] for series in panels] == [
        ["reward/mean"], ["mismatch/abs_logp"], ["eval/aime24/mean@4", "eval/amc23/mean@4"],
        ["response_length/mean"], ["actor/entropy"]]
    _, steps, values = panels[0][0]
    assert steps == [1, 2, 4, 5] and values == [0.1, 0.2, 0.4, 0.5]
    assert panels[2][1][1:] == ([2, 4], [0.25, 0.5])   # validation: only the steps it ran at


def test_a_pattern_matching_nothing_is_reported_missing(plot_metrics, tmp_path):
    rows = plot_metrics.load_rows(_run_dir(tmp_path) / "metrics.jsonl")
    panels, missing = plot_metrics.collect(rows, [["reward/mean"], ["eval/*/maj@*"]])
    assert missing == ["eval/*/maj@*"] and len(panels) == 1


@pytest.mark.parametrize("content, message", [(None, "no such file"), ("\n", "empty"), ("{oops\n", ":1: not JSON")])
def test_bad_metrics_file_is_a_clear_error(plot_metrics, tmp_path, capsys, content, message):
    if content is not None:
        (tmp_path / "metrics.jsonl").write_text(content)
    assert plot_metrics.main([str(tmp_path)]) == 1
    assert message in capsys.readouterr().err


def test_no_plottable_key_is_an_error(plot_metrics, tmp_path, capsys):
    assert plot_metrics.main([str(_run_dir(tmp_path)), "--keys", "nope/a"]) == 1
    assert "none of the keys ['nope/a']" in capsys.readouterr().err


def test_missing_matplotlib_is_a_clear_error(plot_metrics, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    assert plot_metrics.main([str(_run_dir(tmp_path))]) == 1
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert not (tmp_path / "metrics.png").exists()


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib not installed")
def test_writes_png(plot_metrics, tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert plot_metrics.main([str(_run_dir(tmp_path)), "--out", str(out),
                              "--keys", "reward/mean", "mismatch/abs_logp,rollout/logprob_abs_diff"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "'rollout/logprob_abs_diff' not in metrics" in capsys.readouterr().err
