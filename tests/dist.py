"""Run a function on N gloo processes and collect each rank's result.

The ranks fork from a forkserver that has imported torch, Megatron-Core and the policy once for the whole
session: a fresh interpreter spends seconds on those imports, which most of these cases would otherwise
pay per rank. ``fresh=True`` starts each rank as a new interpreter instead, for a case that needs the
environment read at process start (glibc's malloc settings) or a normal interpreter exit (forked ranks end
with ``os._exit``, which runs no C++ destructor: vLLM's CPU TP all-reduce would leave its /dev/shm segment)."""

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


PRELOAD = ["torch", "megatron.core", "megatron_grpo.model.policy", "megatron_grpo.checkpoint", "tests.dist"]


def _context(fresh: bool):
    if fresh:
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def run_distributed(fn, world_size: int, *args, timeout: float = 300.0, attempts: int = 3,
                    fresh: bool = False) -> list:
    """``fn(*args)`` on every rank (env set for ``launch.dist_env``); returns results by rank. A free port can
    be taken by another process between choosing and binding it: that start-up race is retried."""
    for _ in range(attempts - 1):
        try:
            return _run_once(fn, world_size, args, timeout, fresh)
        except AssertionError as exc:
            if "EADDRINUSE" not in str(exc):
                raise
    return _run_once(fn, world_size, args, timeout, fresh)


def _run_once(fn, world_size: int, args: tuple, timeout: float, fresh: bool) -> list:
    ctx = _context(fresh)
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
