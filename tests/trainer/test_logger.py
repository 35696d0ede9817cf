"""The logger's sinks: metrics.jsonl and samples.jsonl on restart (the steps that run again lose their old
lines, and only those), samples in TensorBoard's text tab, and wandb in offline mode read back from its files."""

import json
import struct
from pathlib import Path

import pytest

from megatron_grpo.config import LoggingConfig
from megatron_grpo.trainer.logger import (
    METRICS_FILE,
    SAMPLES_FILE,
    WANDB_ID_FILE,
    MetricsLogger,
    read_metrics,
    read_samples,
    truncate_metrics,
)

ROW = {"kind": "train", "data_source": "math", "index": "7", "prompt": "1+1=? 中文", "response": "\\boxed{2}",
       "ground_truth": "2", "answer": "2", "reward": 1.0, "length": 5, "finish_reason": "stop"}


def _write(run_dir, steps):
    (run_dir / METRICS_FILE).write_text("".join(json.dumps({"step": s, "loss": 0.5}) + "\n" for s in steps))
    (run_dir / SAMPLES_FILE).write_text("".join(json.dumps({"step": s, **ROW}) + "\n" for s in steps))


def test_a_resume_keeps_the_steps_up_to_its_checkpoint_and_step_0s_validation(tmp_path):
    _write(tmp_path, [0, 1, 2, 3])
    truncate_metrics(tmp_path, 2)
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1, 2] == [r["step"] for r in read_samples(tmp_path)]


def test_a_restart_from_scratch_drops_everything_it_reruns(tmp_path):
    _write(tmp_path, [0, 1])  # step 0: validation before training, which the restart runs again
    truncate_metrics(tmp_path, 0)
    assert read_metrics(tmp_path) == [] == read_samples(tmp_path)


def test_samples_go_to_samples_jsonl_and_tensorboards_text_tab(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = MetricsLogger(tmp_path, LoggingConfig(progress_bar=False), 2, 0, "run")
    logger.samples(1, [ROW, {**ROW, "index": "8"}])
    logger.samples(2, [])
    logger.samples(2, [{**ROW, "kind": "val/aime24"}])
    logger.close()
    rows = read_samples(tmp_path)
    assert [(r["step"], r["kind"], r["index"]) for r in rows] == [(1, "train", "7"), (1, "train", "8"),
                                                                  (2, "val/aime24", "7")]
    assert rows[0] == {"step": 1, **ROW}
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    text = events.Tensors("samples/train/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "1+1=? 中文" in text and "\\boxed{2}" in text and "reward 1" in text
    assert [e.step for e in events.Tensors("samples/val/text_summary")] == [2]


def wandb_records(run_file: Path) -> list:
    """The records of an offline run's ``.wandb`` file: LevelDB's log format (32 KiB blocks, 7-byte record
    headers, records split across blocks as first/middle/last) of wandb's protobuf ``Record``s."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", f"{run_file}: not a wandb run file"
    pos, block, payloads, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:   # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):           # a full record, or the last piece of one
            payloads.append(pending)
            pending = b""
    records = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def wandb_run(run_dir: Path) -> dict:
    """What an offline run recorded: its id, project, name, config, and history rows by step."""
    [run_file] = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))[-1:]
    out = {"history": {}, "files": run_file.parent / "files"}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.update(id=record.run.run_id, project=record.run.project, name=record.run.display_name,
                       config={i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "history":
            row = {"/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            out["history"].setdefault(row["_step"], {}).update(row)
    return out


def test_wandb_offline_records_project_name_config_metrics_and_samples(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is an optional extra (pip install 'megatron-grpo[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = LoggingConfig(tensorboard=False, progress_bar=False, wandb=True, wandb_project="grpo-test")
    logger = MetricsLogger(tmp_path, cfg, 3, 0, "my-run", config={"optim": {"lr": 1e-3}, "data": {"seed": 0}})
    logger.log(1, {"reward/mean": 0.25, "loss": 0.5})
    logger.samples(1, [ROW])
    logger.close()
    wandb.teardown()   # wandb's service process writes the run file; at exit a training process does this
    run = wandb_run(tmp_path)
    assert (run["project"], run["name"]) == ("grpo-test", "my-run")
    assert run["id"] == (tmp_path / WANDB_ID_FILE).read_text().strip()
    assert run["config"]["optim"] == {"lr": 1e-3} and run["config"]["data"] == {"seed": 0}
    step1 = run["history"][1]
    assert (step1["reward/mean"], step1["loss"], step1["samples/train/nrows"]) == (0.25, 0.5, 1)
    table = json.loads((run["files"] / step1["samples/train/path"]).read_text())
    assert table["columns"][0] == "step" and table["data"][0][table["columns"].index("response")] == "\\boxed{2}"
    # a requeued job (the same run directory) continues the same wandb run
    logger = MetricsLogger(tmp_path, cfg, 3, 1, "my-run", config={})
    logger.log(2, {"reward/mean": 0.5})
    logger.close()
    wandb.teardown()
    resumed = wandb_run(tmp_path)
    assert resumed["id"] == run["id"] and resumed["history"][2]["reward/mean"] == 0.5
