"""Step metrics: JSON Lines (always), TensorBoard (default on), wandb (opt-in), a tqdm bar on rank 0."""

from __future__ import annotations

import json
import math
from pathlib import Path

from megatron_grpo.config import ConfigError, LoggingConfig

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:  # only the last line may be cut short, by a kill mid-write
                raise
    return rows


def truncate_metrics(run_dir: str | Path, last_step: int) -> None:
    """On resume from ``last_step``, drop lines of steps that ran after that checkpoint (they rerun). A
    restart from scratch drops everything, step 0's validation before training included (it reruns)."""
    path = Path(run_dir) / METRICS_FILE
    if path.is_file():
        kept = [r for r in read_metrics(run_dir) if r["step"] <= last_step] if last_step > 0 else []
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))


class MetricsLogger:
    """Rank 0's sinks. ``log`` writes one JSON object per step, flushed, so a kill loses nothing logged."""

    def __init__(self, run_dir: Path, cfg: LoggingConfig, total_steps: int, start_step: int, run_name: str):
        self.path = run_dir / METRICS_FILE
        self._file = self.path.open("a")
        self._tb = self._wandb = self._bar = None
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if cfg.wandb:
            try:
                import wandb
            except ImportError:
                raise ConfigError("logging.wandb: true but the wandb package is not installed") from None
            self._wandb = wandb.init(project=cfg.wandb_project, name=run_name, dir=str(run_dir), resume="allow")
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
                                  step_s=f"{metrics.get('time/step', 0):.2f}")

    def close(self) -> None:
        self._file.close()
        for sink in (self._tb, self._bar):
            if sink is not None:
                sink.close()
        if self._wandb is not None:
            self._wandb.finish()


def _clean(value: float) -> float | None:
    """JSON has no NaN/Inf: write them as null (the step is still logged)."""
    value = float(value)
    return value if math.isfinite(value) else None
