"""Damaged or half-written checkpoints are detected; ``latest`` only ever names a complete one.

One process saves steps 1 and 2, then dies inside the save of step 3 (killed after its data files are
written, before the rename). Everything after that runs here without a process group: the checks and
the refusal to load happen before any collective.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch.multiprocessing as mp

from megatron_grpo.checkpoint.files import (
    CheckpointError,
    latest_checkpoint,
    resolve_checkpoint,
    rotate,
    steps,
    verify_checkpoint,
    write_latest,
)
from megatron_grpo.checkpoint.state import load_state
from tests.model.tiny import tiny_hf_config

CRASH_EXIT = 17


def _save_then_crash(root: str, port: int) -> None:
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import megatron_grpo.checkpoint.state as state
    from megatron_grpo.checkpoint import save_checkpoint
    from tests.checkpoint.test_resharding import _policy

    policy = _policy(tiny_hf_config(layers=2), {})
    save_checkpoint(root, 1, policy, {"step": 1})
    save_checkpoint(root, 2, policy, {"step": 2})
    state.publish = lambda tmp, final: os._exit(CRASH_EXIT)  # the process dies mid-save of step 3
    save_checkpoint(root, 3, policy, {"step": 3})


@pytest.fixture(scope="module")
def crashed_root(tmp_path_factory):
    from megatron_grpo.launch import free_port

    root = tmp_path_factory.mktemp("faults") / "ckpt"
    proc = mp.get_context("spawn").Process(target=_save_then_crash, args=(str(root), free_port()))
    proc.start()
    proc.join(timeout=300)
    assert proc.exitcode == CRASH_EXIT
    return root


@pytest.fixture()
def root(crashed_root, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(crashed_root, copy)
    return copy


@pytest.mark.slow
def test_crash_mid_save_leaves_latest_on_previous_good(root):
    assert (root / "tmp-step_3").is_dir()
    assert latest_checkpoint(root) == root / "step_2"
    assert steps(root) == [1, 2]
    verify_checkpoint(root / "step_2")
    with pytest.raises(CheckpointError, match="tmp-step_3: an unfinished save"):
        resolve_checkpoint(root / "tmp-step_3")


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_damaged_data_file_is_named(root, damage):
    data = sorted((root / "step_2").glob("*.distcp"))[-1]
    if damage == "missing":
        data.unlink()
    else:
        os.truncate(data, data.stat().st_size // 2)
    with pytest.raises(CheckpointError, match=rf"checkpoint .*step_2: data file '{data.name}' is {damage}"):
        load_state(root, chunks=[])


@pytest.mark.slow
@pytest.mark.parametrize("name", [".metadata", "metadata.json", "trainer_state.json"])
def test_missing_metadata_is_named(root, name):
    (root / "step_2" / name).unlink()
    with pytest.raises(CheckpointError, match=rf"step_2: '{name}' is missing"):
        load_state(root / "step_2", chunks=[])


@pytest.mark.slow
def test_latest_pointing_at_deleted_checkpoint(root):
    shutil.rmtree(root / "step_2")
    with pytest.raises(CheckpointError, match="points at 'step_2'"):
        load_state(root, chunks=[])


@pytest.mark.slow
def test_rotate_keeps_newest_and_latest(root):
    write_latest(root, "step_1")  # e.g. an operator rolled back
    removed = rotate(root, keep_last=1)
    assert removed == [] and steps(root) == [1, 2]  # step_1 is 'latest', step_2 the newest: both kept
    write_latest(root, "step_2")
    assert rotate(root, keep_last=1) == [root / "step_1"]
    assert (root / "tmp-step_3").is_dir()  # a newer unfinished save is never touched by rotation


def test_empty_root_has_no_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert load_state(tmp_path, chunks=[]) is None
