"""Checkpoint directory layout on disk: step directories, the ``latest`` pointer, checks, rotation.

Pure filesystem code (no process group), so the fault checks run anywhere, including the offline
exporter. Layout of a checkpoint root::

    <root>/step_N/            a complete checkpoint (only ever created by renaming a checked tmp dir)
    <root>/tmp-step_N/        a save in progress, or the leftover of a crashed one (never loaded)
    <root>/latest             text: the name of the newest complete step directory

A ``torch_dist`` checkpoint directory holds ``metadata.json`` (Megatron), ``.metadata`` (torch DCP:
every tensor chunk -> file, offset, length), ``common.pt`` and ``__<rank>_<k>.distcp`` data files;
we add ``trainer_state.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

LATEST = "latest"
TRAINER_STATE = "trainer_state.json"
REQUIRED_FILES = ("metadata.json", ".metadata", "common.pt", TRAINER_STATE)
_STEP = re.compile(r"^step_(\d+)$")
_TMP = re.compile(r"^tmp-step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or inconsistent; the message names it and the missing piece."""


def step_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step_{step}"


def tmp_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"tmp-step_{step}"


def is_checkpoint_dir(path: str | Path) -> bool:
    return (Path(path) / "metadata.json").is_file() or (Path(path) / ".metadata").is_file()


def write_latest(root: str | Path, name: str) -> None:
    """Atomically point ``latest`` at ``name`` (temp file + os.replace: readers see old or new, never half)."""
    root = Path(root)
    tmp = root / f".{LATEST}.tmp"
    with open(tmp, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / LATEST)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The directory ``<root>/latest`` names; None when nothing was saved yet. A pointer to a missing
    directory is an error (someone deleted a published checkpoint)."""
    pointer = Path(root) / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    target = Path(root) / name
    if not _STEP.match(name) or not target.is_dir():
        raise CheckpointError(f"{pointer}: points at '{name}', which is not a checkpoint directory under {root}")
    return target


def resolve_checkpoint(path: str | Path) -> Path | None:
    """A checkpoint directory itself, or the ``latest`` one of a checkpoint root (None if empty)."""
    path = Path(path)
    if _TMP.match(path.name):
        raise CheckpointError(f"{path}: an unfinished save (tmp- directory); load its root or a step_N directory")
    if is_checkpoint_dir(path):
        return path
    if not path.is_dir():
        raise CheckpointError(f"checkpoint path {path} does not exist")
    return latest_checkpoint(path)


def _data_extents(path: Path) -> dict[str, int]:
    """Bytes each data file must hold, from the DCP metadata (file -> max offset + length)."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        metadata = FileSystemReader(str(path)).read_metadata()
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path}: unreadable .metadata: {exc}") from exc
    extents: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        end = info.offset + info.length
        extents[info.relative_path] = max(extents.get(info.relative_path, 0), end)
    return extents


def verify_checkpoint(path: str | Path) -> None:
    """Raise CheckpointError unless every metadata file is present and every data file is complete."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist")
    for name in REQUIRED_FILES:
        file = path / name
        if not file.is_file() or file.stat().st_size == 0:
            raise CheckpointError(f"checkpoint {path}: '{name}' is missing or empty")
    for name, needed in sorted(_data_extents(path).items()):
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path}: data file '{name}' is missing")
        size = file.stat().st_size
        if size < needed or size == 0:
            raise CheckpointError(f"checkpoint {path}: data file '{name}' is truncated ({size} < {needed} bytes)")


def read_trainer_state(path: str | Path) -> dict:
    file = Path(path) / TRAINER_STATE
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path}: cannot read '{TRAINER_STATE}': {exc}") from exc


def write_trainer_state(path: str | Path, state: dict) -> None:
    try:
        text = json.dumps(state, indent=2, sort_keys=True)
    except TypeError as exc:
        raise CheckpointError(f"trainer state for {path} is not JSON-serialisable: {exc}") from exc
    (Path(path) / TRAINER_STATE).write_text(text + "\n")


def publish(tmp: Path, final: Path) -> None:
    """Checked tmp dir -> final name, then ``latest``; a re-save of the same step replaces the old one."""
    verify_checkpoint(tmp)
    if final.exists():
        old = final.with_name(final.name + ".replaced")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    write_latest(final.parent, final.name)


def steps(root: str | Path) -> list[int]:
    """Published step numbers under root, ascending."""
    root = Path(root)
    found = [int(m.group(1)) for p in root.iterdir() if (m := _STEP.match(p.name)) and p.is_dir()]
    return sorted(found)


def rotate(root: str | Path, keep_last: int | None) -> list[Path]:
    """Delete all but the newest ``keep_last`` published steps (never the ``latest`` one) and leftover
    tmp dirs of older steps; returns what was deleted."""
    root = Path(root)
    current = latest_checkpoint(root)
    removed = []
    doomed = [step_dir(root, s) for s in steps(root)[: -keep_last or None]] if keep_last else []
    newest = steps(root)[-1] if steps(root) else -1
    doomed += [p for p in root.iterdir() if (m := _TMP.match(p.name)) and int(m.group(1)) < newest]
    for path in doomed:
        if current is not None and path.resolve() == current.resolve():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
