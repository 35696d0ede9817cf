"""Collective save/load of model, optimizer and scheduler state with ``megatron.core.dist_checkpointing``.

The checkpoint is layout-free (``torch_dist``): every tensor is stored under its global Megatron key
with its global shape, so a checkpoint written at one TP/PP/DP layout loads at any other. The
distributed optimizer uses the ``fully_sharded_model_space`` format for the same reason (its
``dp_reshardable`` format only reshards over DP).

A save is atomic: all ranks write into ``<root>/tmp-step_N``; rank 0 adds the trainer-state JSON,
checks the directory (``files.verify_checkpoint``), renames it to ``step_N``, moves ``latest`` and
deletes old checkpoints. A crash at any point leaves ``latest`` on the previous good checkpoint.
"""

from __future__ import annotations

import errno
import shutil
import time
from pathlib import Path
from typing import NoReturn

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from torch.distributed.checkpoint import CheckpointException

from megatron_grpo.checkpoint.files import (
    LATEST,
    CheckpointError,
    choose_checkpoint,
    publish,
    read_trainer_state,
    resolve_checkpoint,
    rotate,
    step_dir,
    tmp_dir,
    verify_checkpoint,
    write_manifest,
    write_trainer_state,
)
from megatron_grpo.convert.weights import unwrap

FORMAT_VERSION = 1
_NEARLY_FULL = 1 << 20  # bytes free below which a failed save is put down to a full disk
OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "fully_reshardable"}


def model_sharded_state_dict(chunks: list[torch.nn.Module]) -> dict:
    """Megatron-LM's convention: ``model`` for one chunk, ``model0``, ``model1``... with virtual pipeline."""
    if len(chunks) == 1:
        return {"model": unwrap(chunks[0]).sharded_state_dict()}
    return {f"model{i}": unwrap(c).sharded_state_dict() for i, c in enumerate(chunks)}


def _init_torch_adam_state(optimizer) -> None:
    """Megatron's distributed optimizer over plain ``torch.optim.Adam`` (no apex/TE: CPU) reads every
    parameter's ``step`` in ``state_dict()``, which fails before the first step. Zero moments at step 0
    are exactly a fresh Adam's state, so initialising them changes nothing."""
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if not isinstance(inner, torch.optim.Adam | torch.optim.AdamW):
            continue
        for group in inner.param_groups:
            for p in group["params"]:
                if not inner.state[p]:
                    inner.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                                      "exp_avg_sq": torch.zeros_like(p)}


def _load_optimizer(optimizer, state: dict) -> None:
    """``optimizer.load_state_dict`` with a work-around for megatron-core 0.16.1's distributed optimizer
    over plain torch Adam: ``load_parameter_state_from_fully_reshardable`` copies every per-parameter
    state key from the checkpoint, but torch Adam's ``step`` is not stored there (KeyError 'step').
    We load the rest first, then the parameter state with ``step`` set aside. Also, ``load_state_dict``
    gives every parameter the SAME ``step`` tensor, which torch's foreach Adam then increments once
    per parameter; each parameter gets its own copy back."""
    chained = getattr(optimizer, "chained_optimizers", [optimizer])
    states = [state] if len(chained) == 1 else [state[i] for i in range(len(chained))]
    for opt, sd in zip(chained, states, strict=True):
        reshardable = sd.get("param_state_sharding_type") == "fully_reshardable"
        param_state = sd.pop("param_state", None) if reshardable else None
        opt.load_state_dict(sd)
        if param_state is None:
            continue
        inner = opt.optimizer.state
        steps = {p: s.pop("step") for p, s in inner.items() if "step" in s}
        opt.load_parameter_state_from_fully_reshardable(param_state)
        for p, step in steps.items():
            inner[p]["step"] = step.clone()


def _sharded_state(chunks, optimizer, is_loading: bool) -> dict:
    state = model_sharded_state_dict(chunks)
    if optimizer is not None:
        _init_torch_adam_state(optimizer)
        model_sd = {k: v for part in state.values() for k, v in part.items()}
        state["optimizer"] = optimizer.sharded_state_dict(model_sd, is_loading=is_loading,
                                                          metadata=OPTIMIZER_METADATA)
    return state


def _rank0_then_share(fn):
    """Run ``fn`` on rank 0 and return its result on every rank; every rank raises rank 0's error, so
    no rank goes on alone."""
    error = result = None
    if dist.get_rank() == 0:
        try:
            result = fn()
        except Exception as exc:  # re-raised on every rank below
            error = f"{type(exc).__name__}: {exc}"
    box = [error, result]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise CheckpointError(box[0])
    return box[1]


def resume_point(root: str | Path, on_corrupt: str = "fallback") -> Path | None:
    """Collective: the checkpoint to resume from (``files.choose_checkpoint``), chosen and checksummed on
    rank 0 alone, since the check reads every file."""
    return _rank0_then_share(lambda: choose_checkpoint(root, on_corrupt))


def save_state(root: str | Path, step: int, chunks: list, optimizer=None, scheduler=None,
               extra_state: dict | None = None, keep_last: int | None = None) -> Path:
    """Collective: write ``<root>/step_<step>`` atomically and point ``latest`` at it."""
    root, tmp, final = _begin(root, step)
    try:
        dist_checkpointing.save(_sharded_state(chunks, optimizer, is_loading=False), str(tmp))
    except (Exception, CheckpointException) as exc:  # a BaseException; raised on every rank
        _raise_failed_write(exc, root, tmp, final)
    dist.barrier()
    _publish(root, tmp, final, _trainer_state(step, optimizer, scheduler, extra_state), keep_last)
    return final


class CheckpointWriter:
    """Saves that overlap training (``checkpoint.async_save``): Megatron-Core's async dist-checkpointing writes
    the shards from a forked process, a snapshot of this moment's state, while the next steps run. The save is
    published (trainer state, manifest, ``latest``) only once every rank's write has completed, so a kill
    during the write leaves ``latest`` on the previous checkpoint. At most one save is in flight; without
    ``async_save`` every save is the synchronous ``save_state``."""

    def __init__(self, async_save: bool):
        from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

        self._queue = AsyncCallsQueue() if async_save else None
        self._pending: tuple[Path, Path, Path] | None = None   # root, tmp and final of the save in flight
        self._blocked = 0.0

    def metrics(self) -> dict[str, float]:
        """``time/checkpoint``: the seconds the trainer was held up by saves since the last call (the whole
        save when synchronous; the snapshot, and any wait for a write, when async)."""
        blocked, self._blocked = self._blocked, 0.0
        return {"time/checkpoint": blocked}

    def save(self, root: str | Path, step: int, policy, extra_state: dict | None = None,
             keep_last: int | None = None, wait: bool = False) -> Path:
        """Collective: ``policy``'s model, optimizer and scheduler, and ``extra_state``. ``wait``: return once
        this save is published (the run's last save, a stop request)."""
        start = time.perf_counter()
        try:
            return self._save(root, step, policy, extra_state, keep_last, wait)
        finally:
            self._blocked += time.perf_counter() - start

    def _save(self, root, step, policy, extra_state, keep_last, wait) -> Path:
        chunks, optimizer, scheduler = policy.model, policy.optimizer, policy.scheduler
        if self._queue is None:
            return save_state(root, step, chunks, optimizer, scheduler, extra_state, keep_last)
        self.finish()
        root, tmp, final = _begin(root, step)
        state = _trainer_state(step, optimizer, scheduler, extra_state)  # this moment's, as the shards are
        request = dist_checkpointing.save(_sharded_state(chunks, optimizer, is_loading=False), str(tmp),
                                          async_sharded_save=True)
        request.add_finalize_fn(lambda: _publish(root, tmp, final, state, keep_last))
        self._queue.schedule_async_request(request)  # a forked writer, which dies with the trainer (platform)
        self._pending = (root, tmp, final)
        if wait:
            self.finish()
        return final

    def poll(self) -> None:
        """Collective (cheap: one all-reduce while a save is in flight): publish the save if every rank's
        write has completed."""
        self._finalize(blocking=False)

    def finish(self) -> None:
        """Collective: wait for the save in flight, and publish it."""
        self._finalize(blocking=True)

    def _finalize(self, blocking: bool) -> None:
        if self._pending is None:
            return
        start = time.perf_counter()
        try:
            done = self._queue.maybe_finalize_async_calls(blocking=blocking)
        except (Exception, CheckpointException) as exc:
            pending, self._pending = self._pending, None
            _raise_failed_write(exc, *pending)
        finally:
            self._blocked += time.perf_counter() - start
        if done:
            self._pending = None


def _begin(root: str | Path, step: int) -> tuple[Path, Path, Path]:
    """Collective: a fresh ``tmp-step_N`` for every rank to write into."""
    root, tmp, final = Path(root), tmp_dir(root, step), step_dir(root, step)

    def prepare():
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # leftover of a crashed save of the same step
        tmp.mkdir()

    _rank0_then_share(prepare)
    return root, tmp, final


def _trainer_state(step: int, optimizer, scheduler, extra_state: dict | None) -> dict:
    return {"format": FORMAT_VERSION, "step": step, "has_optimizer": optimizer is not None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "extra": extra_state if extra_state is not None else {}}


def _publish(root: Path, tmp: Path, final: Path, trainer_state: dict, keep_last: int | None) -> None:
    """Collective, once every rank's shards are written: rank 0 adds the trainer state and the manifest, then
    renames the directory into place, moves ``latest`` and deletes old checkpoints."""
    def finish():
        try:
            write_trainer_state(tmp, trainer_state)
            write_manifest(tmp)
        except OSError as exc:
            if not _disk_full(exc, root):
                raise
            _give_up(root, tmp, final, exc)
        publish(tmp, final)
        rotate(root, keep_last)

    _rank0_then_share(finish)


def _raise_failed_write(exc: BaseException, root: Path, tmp: Path, final: Path) -> NoReturn:
    """A failed write: on a full disk, the partial files go and every rank raises a clear error; otherwise
    the error itself propagates."""
    if not _disk_full(exc, root):
        raise exc
    _rank0_then_share(lambda: _give_up(root, tmp, final, exc))


def _disk_full(exc: BaseException, root: Path) -> bool:
    """ENOSPC (or EDQUOT, a full quota), also when torch's checkpoint writer wraps it (its
    ``CheckpointException`` holds each rank's failure in ``failures``), or when torch.save's zip writer
    reports a short write as "unexpected pos": then the file system is found (nearly) full."""
    if shutil.disk_usage(root).free < _NEARLY_FULL:
        return True
    return _says_disk_full(exc)


def _says_disk_full(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return True
        if any(_says_disk_full(failure) for failure in getattr(exc, "failures", {}).values()):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _give_up(root: Path, tmp: Path, final: Path, exc: BaseException):
    """A save that ran out of space: its partial files go (they hold the space), nothing else changes."""
    shutil.rmtree(tmp, ignore_errors=True)
    previous = (root / LATEST).read_text().strip() if (root / LATEST).is_file() else "none"
    raise CheckpointError(f"checkpoint {final}: the disk of {root} is full ({exc}); the save was abandoned "
                          f"and its partial files removed; 'latest' still names {previous}")


def load_state(path: str | Path, chunks: list, optimizer=None, scheduler=None) -> dict | None:
    """Collective: load a checkpoint (a step dir, or a root's ``latest``) into this rank's shards.

    Returns the trainer's ``extra_state`` (None when the root holds no checkpoint yet). The optimizer
    and scheduler are restored only when given; a model-only checkpoint (e.g. from ``hf-to-mcore``)
    cannot restore an optimizer.
    """
    ckpt = resolve_checkpoint(path)
    if ckpt is None:
        return None
    verify_checkpoint(ckpt)
    trainer_state = read_trainer_state(ckpt)
    if optimizer is not None and not trainer_state.get("has_optimizer"):
        raise CheckpointError(f"checkpoint {ckpt}: holds no optimizer state (saved model-only)")
    loaded = dist_checkpointing.load(_sharded_state(chunks, optimizer, is_loading=True), str(ckpt))
    for i, chunk in enumerate(chunks):
        chunk.load_state_dict(loaded["model" if len(chunks) == 1 else f"model{i}"], strict=True)
    if optimizer is not None:
        _load_optimizer(optimizer, loaded["optimizer"])
    if scheduler is not None and trainer_state.get("scheduler") is not None:
        scheduler.load_state_dict(trainer_state["scheduler"])
    return trainer_state["extra"]
