"""Run a function on N gloo processes (torch.multiprocessing spawn) and collect each rank's result."""

from __future__ import annotations

import io
import os
import traceback

import torch
import torch.multiprocessing as mp

from megatron_grpo.launch import free_port


def _worker(rank: int, world: int, port: int, fn, args, queue) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)  # torch is already imported here: the variable alone comes too late
    try:
        # Serialise to bytes: tensors sent through a torch queue live in shared memory that
        # disappears when this process exits, before the parent reads them.
        buf = io.BytesIO()
        torch.save(fn(*args), buf)
        queue.put((rank, buf.getvalue(), None))
    except BaseException:  # report every failure to the parent, including assertion errors
        queue.put((rank, None, traceback.format_exc()))


def run_distributed(fn, world_size: int, *args, timeout: float = 300.0, attempts: int = 3) -> list:
    """``fn(*args)`` on every rank (env set for ``launch.dist_env``); returns results by rank. A free port can
    be taken by another process between choosing and binding it: that start-up race is retried."""
    for _ in range(attempts - 1):
        try:
            return _run_once(fn, world_size, args, timeout)
        except AssertionError as exc:
            if "EADDRINUSE" not in str(exc):
                raise
    return _run_once(fn, world_size, args, timeout)


def _run_once(fn, world_size: int, args: tuple, timeout: float) -> list:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, world_size, port, fn, args, queue)) for r in range(world_size)]
    for p in procs:
        p.start()
    results = {}
    try:
        for _ in range(world_size):
            rank, value, err = queue.get(timeout=timeout)
            if err:  # peers may now block in a collective: stop them all at once
                raise AssertionError(f"rank {rank} failed:\n{err}")
            results[rank] = torch.load(io.BytesIO(value), weights_only=False)
    finally:
        for p in procs:
            p.join(timeout=30 if len(results) == world_size else 0)
            if p.is_alive():
                p.kill()
    return [results[r] for r in range(world_size)]
