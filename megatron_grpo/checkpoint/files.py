"""Checkpoint directory layout on disk: step directories, the ``latest`` pointer, checks, rotation.

Pure filesystem code (no process group), so the fault checks run anywhere, including the offline
exporter. Layout of a checkpoint root::

    <root>/step_N/            a complete checkpoint (only ever created by renaming a checked tmp dir)
    <root>/tmp-step_N/        a save in progress, or the leftover of a crashed one
    <root>/trash-step_N/      the step_N a re-save replaces, for the moment between two renames
    <root>/latest             text: the name of the newest complete step directory

A ``torch_dist`` checkpoint directory holds ``metadata.json`` (Megatron), ``.metadata`` (torch DCP:
every tensor chunk -> file, offset, length), ``common.pt`` and ``__<rank>_<k>.distcp`` data files;
we add ``trainer_state.json`` and, written last, ``manifest.json``: every file's size and CRC-32.

Publication (``publish``) is a rename of the finished tmp dir, then ``latest``. A re-save of an existing
step first moves the old directory to ``trash-``, so one of the two complete copies exists under a
known name at every moment, and ``recover`` puts it back after a kill. ``choose_checkpoint`` picks the
checkpoint to resume: ``latest`` if it is whole, else the newest whole one (docs/checkpoints.md).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import zlib
from pathlib import Path
from typing import Literal

LATEST = "latest"
TRAINER_STATE = "trainer_state.json"
MANIFEST = "manifest.json"
REQUIRED_FILES = ("metadata.json", ".metadata", "common.pt", TRAINER_STATE)
_STEP = re.compile(r"^step_(\d+)$")
_TMP = re.compile(r"^tmp-step_(\d+)$")
_TRASH = re.compile(r"^trash-step_(\d+)$")
_CHUNK = 8 << 20

log = logging.getLogger(__name__)


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


def verify_checkpoint(path: str | Path, checksums: bool = False) -> None:
    """Raise CheckpointError unless every metadata file is present and every data file is complete;
    with ``checksums``, also unless every file the manifest lists has its recorded size and CRC-32."""
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
    if checksums:
        _check_manifest(path)


def write_manifest(path: str | Path) -> None:
    """Record every file of the checkpoint directory ``path`` with its size and CRC-32; written last."""
    path = Path(path)
    files = {p.name: {"size": p.stat().st_size, "crc32": _crc32(p)}
             for p in sorted(path.iterdir()) if p.is_file() and p.name != MANIFEST}
    tmp = path / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"files": files}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path / MANIFEST)


def _check_manifest(path: Path) -> None:
    manifest = path / MANIFEST
    if not manifest.is_file():
        return  # saved before manifests existed: the structural checks above are all there is
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path}: unreadable '{MANIFEST}': {exc}") from exc
    for name, expected in sorted(files.items()):
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path}: '{name}' is missing (listed in {MANIFEST})")
        if file.stat().st_size != expected["size"]:
            raise CheckpointError(f"checkpoint {path}: '{name}' has {file.stat().st_size} bytes, "
                                  f"{MANIFEST} says {expected['size']}")
        if _crc32(file) != expected["crc32"]:
            raise CheckpointError(f"checkpoint {path}: '{name}' does not match its CRC-32 in {MANIFEST} "
                                  "(corrupted on disk)")


def _crc32(file: Path) -> int:
    crc = 0
    with open(file, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


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
    """Checked tmp dir -> final name, then ``latest``. A re-save of the same step moves the old one to
    ``trash-`` first; between the two renames ``recover`` finds both copies."""
    verify_checkpoint(tmp)
    trash = final.with_name(f"trash-{final.name}")
    if final.exists():
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
    os.replace(tmp, final)
    write_latest(final.parent, final.name)
    shutil.rmtree(trash, ignore_errors=True)


def recover(root: str | Path) -> None:
    """Finish what a kill interrupted: a step directory that a re-save had moved away comes back, the new
    copy if it is whole (its manifest is written last), else the old one; leftover trash goes."""
    root = Path(root)
    if not root.is_dir():
        return
    for trash in [p for p in root.iterdir() if _TRASH.match(p.name)]:
        final = root / trash.name.removeprefix("trash-")
        if not final.exists():
            tmp = root / f"tmp-{final.name}"
            source = tmp if tmp.is_dir() and _whole(tmp) else trash
            os.replace(source, final)
            log.warning("checkpoint %s: restored from %s after an interrupted re-save", final, source.name)
        shutil.rmtree(trash, ignore_errors=True)


def _whole(path: Path) -> bool:
    try:
        verify_checkpoint(path, checksums=True)
    except CheckpointError:
        return False
    return (path / MANIFEST).is_file()


def choose_checkpoint(root: str | Path, on_corrupt: Literal["fallback", "error"] = "fallback") -> Path | None:
    """The checkpoint to resume from: ``latest`` when it is whole, checksums included; else (``fallback``)
    the newest whole step, each bad one logged with what is wrong. None when nothing was saved yet."""
    root = Path(root)
    recover(root)
    problems, candidates = [], []
    try:
        latest = latest_checkpoint(root)
        candidates += [latest] if latest is not None else []
    except CheckpointError as exc:
        if on_corrupt == "error":
            raise
        log.warning("%s; looking for another checkpoint", exc)
        problems.append(str(exc))
    candidates += [step_dir(root, s) for s in reversed(steps(root)) if step_dir(root, s) not in candidates]
    for candidate in candidates:
        try:
            verify_checkpoint(candidate, checksums=True)
        except CheckpointError as exc:
            problems.append(str(exc))
            if on_corrupt == "error":
                raise
            log.warning("%s; looking for an older checkpoint", exc)
            continue
        if problems:
            log.warning("resuming from %s, the newest whole checkpoint", candidate)
        return candidate
    if problems:
        raise CheckpointError(f"no whole checkpoint under {root}: " + "; ".join(problems))
    return None


def steps(root: str | Path) -> list[int]:
    """Published step numbers under root, ascending."""
    root = Path(root)
    if not root.is_dir():
        return []
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
