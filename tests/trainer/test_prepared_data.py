"""From ``data prepare`` to training with the reference config's data settings: the reference config (copied
beside the prepared ``data/``, as it sits in a clone) trains two steps of a tiny model with the Qwen3
vocabulary, writes samples.jsonl, and logs to wandb in offline mode."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from megatron_grpo.data import BOXED_SUFFIX
from megatron_grpo.rollout.samples import SAMPLE_FIELDS
from megatron_grpo.trainer.logger import read_metrics, read_samples
from tests.shared_data import DATA as SHARED
from tests.trainer.harness import REPO, env, train
from tests.trainer.test_logger import wandb_run

pytestmark = pytest.mark.slow


TINY = REPO / "megatron_grpo" / "assets" / "tiny" / "config.json"
PREPARED = ("dapo17k_processed", "aime24", "aime25", "amc83")
# the reference config as it is, but for the model and the scale of a two-step CPU run
TINY_SCALE = ["model.hf_checkpoint=null", "model.transformer_impl=local", "model.recompute=none",
              "rollout.train.n=2", "rollout.train.max_response_length=4", "rollout.val.n=1",
              "rollout.val.max_response_length=4", "rollout.max_model_len=1100", "rollout.kv_cache_gb=0.1",
              "data.batch_prompts=4", "algo.mini_batch_prompts=4", "algo.micro_batch_tokens=2048",
              "eval.max_problems=2", "eval.k=1", "trainer.test_freq=2", "trainer.max_steps=2",
              "checkpoint.save_freq=0", "logging.samples_every=1", "logging.wandb=true"]


def _mirror(root: Path) -> Path:
    """A small copy of the offline mirror: the first 64 problems of the processed DAPO file, the eval sets."""
    mirror = root / "mirror"
    (mirror / "train").mkdir(parents=True)
    name = "dapo_math_17k_processed_dedup17398.parquet"
    pq.write_table(pq.read_table(SHARED / "train" / name).slice(0, 64), mirror / "train" / name)
    shutil.copytree(SHARED / "eval", mirror / "eval")
    return mirror


def _prepare_then_train(root: Path):
    if not SHARED.is_dir():
        return None
    root.mkdir(parents=True)
    prepared = subprocess.run([sys.executable, "-m", "megatron_grpo", "data", "prepare", "--from", str(_mirror(root)),
                               "--out", str(root / "data"), "--only", *PREPARED],
                              env=env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    shutil.copytree(REPO / "configs", root / "configs")
    model = {**json.loads(TINY.read_text()), "vocab_size": 151936, "max_position_embeddings": 2048,
             "bos_token_id": 151643, "eos_token_id": 151643, "pad_token_id": 151643, "hidden_size": 64,
             "intermediate_size": 128, "num_hidden_layers": 1, "layer_types": ["full_attention"]}
    (root / "model.json").write_text(json.dumps(model))
    model_files = [f"model.hf_config={root / 'model.json'}", f"model.tokenizer={SHARED / 'tokenizer' / 'qwen3'}"]
    trained = train(root / "run", *model_files, *TINY_SCALE, config=root / "configs" / "qwen3_4b_dapo.yaml")
    return prepared, trained


LANE = {"prepared.reference": _prepare_then_train}


@pytest.mark.lane("prepared.reference")
def test_data_prepare_then_two_steps_with_the_reference_data_settings(lane):
    result = lane.result("prepared.reference")
    if result is None:
        pytest.skip(f"the offline data mirror {SHARED} is absent")
    (prepared, trained), root = result, lane.root / "prepared.reference"
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    assert {k: v["rows"] for k, v in json.loads((root / "data" / "prepare.json").read_text()).items()} == {
        "dapo17k_processed": 64, "aime24": 30, "aime25": 30, "amc83": 83}
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = root / "run"
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2] and "eval/amc23/mean@1" in rows[1]
    # the reference config's own relative paths found the prepared files
    resolved = (run / "config.yaml").read_text()
    assert f"{root / 'data' / 'train' / 'dapo_math_17k_processed.parquet'}" in resolved
    assert f"{root / 'data' / 'eval' / 'amc83.jsonl'}" in resolved

    samples = read_samples(run)
    train_rows = [r for r in samples if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == [1] * 4 + [2] * 4
    assert all(set(r) == set(SAMPLE_FIELDS) for r in samples)
    # the reference data settings: the bare problem with the boxed instruction, DAPO's integer answers
    assert all(r["prompt"].endswith(BOXED_SUFFIX) and r["ground_truth"].lstrip("-").isdigit() for r in train_rows)
    assert all(r["length"] <= 4 and r["finish_reason"] in ("stop", "length") for r in train_rows)
    assert sorted({r["kind"] for r in samples if r["step"] == 2} - {"train"}) == ["val/aime24", "val/aime25",
                                                                                 "val/amc23"]

    logged = wandb_run(run)   # logging.wandb with WANDB_MODE=offline (tests/trainer/harness.py)
    assert (logged["project"], logged["name"]) == ("megatron_grpo", "run")
    assert logged["config"]["data"]["prompt_template"] == "boxed" and logged["config"]["trainer"]["max_steps"] == 2
    assert logged["history"][2]["eval/amc23/mean@1"] == rows[1]["eval/amc23/mean@1"]
    assert logged["history"][1]["samples/train/nrows"] == 4
