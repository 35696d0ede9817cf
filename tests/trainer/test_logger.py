"""metrics.jsonl on restart: the steps that run again lose their old lines, and only those."""

import json

from megatron_grpo.trainer.logger import METRICS_FILE, read_metrics, truncate_metrics


def _write(run_dir, steps):
    (run_dir / METRICS_FILE).write_text("".join(json.dumps({"step": s, "loss": 0.5}) + "\n" for s in steps))


def test_a_resume_keeps_the_steps_up_to_its_checkpoint_and_step_0s_validation(tmp_path):
    _write(tmp_path, [0, 1, 2, 3])
    truncate_metrics(tmp_path, 2)
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1, 2]


def test_a_restart_from_scratch_drops_everything_it_reruns(tmp_path):
    _write(tmp_path, [0, 1])  # step 0: validation before training, which the restart runs again
    truncate_metrics(tmp_path, 0)
    assert read_metrics(tmp_path) == []
