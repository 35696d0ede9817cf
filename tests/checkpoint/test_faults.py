"""Damaged or half-written checkpoints are detected; ``latest`` only ever names a complete one.

One process saves steps 1 and 2, then dies inside the save of step 3 (killed after its data files are
written, before the rename). Everything after that runs here without a process group: the checks and
the refusal to load happen before any collective.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from megatron_grpo.checkpoint.files import (
    CheckpointError,
    choose_checkpoint,
    latest_checkpoint,
    publish,
    read_trainer_state,
    resolve_checkpoint,
    rotate,
    step_dir,
    steps,
    tmp_dir,
    verify_checkpoint,
    write_latest,
    write_manifest,
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


# ---- manifest, fallback and atomic (re-)publication -------------------------------------------------


def _flip_a_byte(file):
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["flipped", "truncated", "no_trainer_state", "deleted"])
def test_a_damaged_latest_falls_back_to_the_newest_whole_checkpoint(root, damage, caplog):
    data = sorted((root / "step_2").glob("*.distcp"))[-1]
    if damage == "flipped":
        _flip_a_byte(data)  # same size: only the checksum can tell
        named = f"'{data.name}' does not match its CRC-32"
    elif damage == "truncated":
        os.truncate(data, data.stat().st_size - 1)
        named = f"'{data.name}'"
    elif damage == "no_trainer_state":
        (root / "step_2" / "trainer_state.json").unlink()
        named = "'trainer_state.json' is missing"
    else:
        shutil.rmtree(root / "step_2")
        named = "points at 'step_2'"
    with caplog.at_level("WARNING"):
        assert choose_checkpoint(root) == root / "step_1"
    assert named in caplog.text and "resuming from" in caplog.text
    with pytest.raises(CheckpointError, match=re.escape(named)):
        choose_checkpoint(root, on_corrupt="error")


@pytest.mark.slow
def test_nothing_whole_is_an_error_not_a_fresh_start(root):
    for step in (1, 2):
        _flip_a_byte(root / f"step_{step}" / "common.pt")
    with pytest.raises(CheckpointError, match="no whole checkpoint under"):
        choose_checkpoint(root)


class Killed(BaseException):
    """The process dies here: no ``except Exception`` cleanup runs."""


def _kill_at(monkeypatch, op: int) -> list[str]:
    """Make the ``op``-th namespace change (rename, tree removal) of the checkpoint files kill the process."""
    done, real_replace, real_rmtree = [], os.replace, shutil.rmtree

    def step(name, fn, *args, **kwargs):
        if len(done) == op:
            raise Killed(name)
        done.append(name)
        return fn(*args, **kwargs)

    monkeypatch.setattr(os, "replace", lambda *a, **k: step("replace", real_replace, *a, **k))
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: step("rmtree", real_rmtree, *a, **k))
    return done


@pytest.mark.slow
@pytest.mark.parametrize("step", [3, 2], ids=["save", "re-save"])
def test_a_kill_at_every_file_operation_of_a_publication_leaves_a_whole_checkpoint(root, monkeypatch, step):
    """Publishing step 3 (new) or step 2 again (a re-save replaces it): whatever operation the kill hits,
    the resume finds the old checkpoint or the new one, whole, and never neither."""
    shutil.rmtree(root / "tmp-step_3")
    pristine = root.with_name("pristine")
    shutil.copytree(root, pristine)
    outcomes, op = set(), 0
    while True:
        shutil.rmtree(root)
        shutil.copytree(pristine, root)
        new = tmp_dir(root, step)
        shutil.copytree(root / "step_1", new)  # the new content: step 1's, told apart by its trainer state
        (new / "manifest.json").unlink()
        with monkeypatch.context() as patch:
            done = _kill_at(patch, op)
            try:
                write_manifest(new)
                publish(new, step_dir(root, step))
                finished = True
            except Killed:
                finished = False
        chosen = choose_checkpoint(root, on_corrupt="error")
        verify_checkpoint(chosen, checksums=True)
        saved = read_trainer_state(chosen)["step"]
        if step == 2:  # the re-saved step is never lost: the old copy or the new one is there
            assert chosen == root / "step_2" and saved in (1, 2), (op, done)
        else:
            assert (chosen, saved) in ((root / "step_2", 2), (root / "step_3", 1)), (op, done)
        outcomes.add(saved)
        if finished:
            break
        op += 1
    assert op >= 3 and outcomes == {1, 2}  # kills before and after the switch were both exercised


def _save_twice(root: str, port: int, report: str) -> None:
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from megatron_grpo.checkpoint import save_checkpoint
    from tests.checkpoint.test_resharding import _policy

    policy = _policy(tiny_hf_config(layers=2), {})
    save_checkpoint(root, 1, policy, {"step": 1})
    try:
        save_checkpoint(root, 2, policy, {"step": 2})
    except CheckpointError as exc:
        Path(report).write_text(str(exc))


@pytest.mark.slow
def test_a_full_disk_fails_the_save_clearly_and_keeps_the_previous_checkpoint(crashed_root, tmp_path):
    """A tmpfs with room for one checkpoint and a half: the second save hits ENOSPC."""
    from megatron_grpo.launch import free_port

    size = sum(f.stat().st_size for f in (crashed_root / "step_1").iterdir())
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size * 3 // 2 // 1024 + 1}k", "tmpfs", str(disk)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"mounting a small tmpfs needs root: {mount.stderr.strip()}")
    try:
        root, report = disk / "ckpt", tmp_path / "error.txt"
        proc = mp.get_context("spawn").Process(target=_save_twice, args=(str(root), free_port(), str(report)))
        proc.start()
        proc.join(timeout=300)
        assert proc.exitcode == 0 and report.is_file()
        assert "the disk of" in report.read_text() and "is full" in report.read_text()
        assert "'latest' still names step_1" in report.read_text()
        assert latest_checkpoint(root) == root / "step_1" and steps(root) == [1]
        verify_checkpoint(root / "step_1", checksums=True)
        assert not (root / "tmp-step_2").exists()  # its partial files, which held the space, are gone
    finally:
        subprocess.run(["umount", str(disk)], check=True)
