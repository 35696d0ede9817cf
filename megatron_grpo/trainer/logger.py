"""Step metrics and generated samples: JSON Lines (always), TensorBoard (default on), wandb (opt-in), a tqdm
bar on rank 0."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

from megatron_grpo.config import ConfigError, LoggingConfig
from megatron_grpo.rollout.samples import SAMPLE_FIELDS, rows_markdown

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
WANDB_ID_FILE = "wandb_id"   # one wandb run per run directory, continued by every restart


def read_metrics(run_dir: str | Path) -> list[dict]:
    return _read_rows(Path(run_dir) / METRICS_FILE)


def read_samples(run_dir: str | Path) -> list[dict]:
    return _read_rows(Path(run_dir) / SAMPLES_FILE)


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:  # only the last line may be cut short, by a kill mid-write
                raise
    return rows


def truncate_metrics(run_dir: str | Path, last_step: int) -> None:
    """On resume from ``last_step``, drop the metrics and samples of steps that ran after that checkpoint (they
    rerun). A restart from scratch drops everything, step 0's validation before training included."""
    for name in (METRICS_FILE, SAMPLES_FILE):
        path = Path(run_dir) / name
        if path.is_file():
            kept = [r for r in _read_rows(path) if r["step"] <= last_step] if last_step > 0 else []
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")


class MetricsLogger:
    """Rank 0's sinks. ``log`` writes one JSON object per step, flushed, so a kill loses nothing logged."""

    def __init__(self, run_dir: Path, cfg: LoggingConfig, total_steps: int, start_step: int, run_name: str,
                 config: dict[str, Any] | None = None):
        """``config``: the resolved config, which wandb records with the run."""
        self.path = run_dir / METRICS_FILE
        self._file = self.path.open("a")
        self._samples = (run_dir / SAMPLES_FILE).open("a", encoding="utf-8")
        self._tb = self._wandb = self._bar = None
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if cfg.wandb:
            try:
                import wandb
            except ImportError:
                raise ConfigError("logging.wandb: true but the wandb package is not installed") from None
            self._wandb = wandb.init(project=cfg.wandb_project, name=run_name, dir=str(run_dir), config=config,
                                     id=_wandb_id(run_dir), resume="allow")
        if cfg.progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc="grpo", dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in sorted(metrics.items())}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)
        if self._bar is not None and step > 0:  # step 0: validation before training, not a step
            self._bar.update(1)
            self._bar.set_postfix(reward=f"{metrics.get('reward/mean', 0):.3f}",
                                  len=f"{metrics.get('response_length/mean', 0):.0f}",
                                  step_s=f"{metrics.get('time/step', 0):.2f}")

    def samples(self, step: int, rows: list[dict]) -> None:
        """Generated samples of ``step``, one JSON object per row, and as text in TensorBoard and wandb."""
        if not rows:
            return
        rows = [{"step": step, **r} for r in rows]
        self._samples.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        self._samples.flush()
        kind = rows[0]["kind"].split("/")[0]
        if self._tb is not None:
            self._tb.add_text(f"samples/{kind}", rows_markdown(rows), step)
            self._tb.flush()
        if self._wandb is not None:
            import wandb

            table = wandb.Table(columns=list(SAMPLE_FIELDS), data=[[r[f] for f in SAMPLE_FIELDS] for r in rows])
            self._wandb.log({f"samples/{kind}": table}, step=step)

    def close(self) -> None:
        self._file.close()
        self._samples.close()
        for sink in (self._tb, self._bar):
            if sink is not None:
                sink.close()
        if self._wandb is not None:
            self._wandb.finish()


def _wandb_id(run_dir: Path) -> str:
    """The run directory's wandb run id, made on its first start: a requeued job logs into the same run."""
    path = run_dir / WANDB_ID_FILE
    if not path.is_file():
        path.write_text(uuid.uuid4().hex[:16] + "\n")
    return path.read_text().strip()


def _clean(value: float) -> float | None:
    """JSON has no NaN/Inf: write them as null (the step is still logged)."""
    value = float(value)
    return value if math.isfinite(value) else None
