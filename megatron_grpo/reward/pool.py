"""A persistent pool of grading processes with a time limit per call.

``concurrent.futures.ProcessPoolExecutor`` cannot do this: it has no per-task timeout and a worker that dies
breaks the whole executor. Here each worker owns one pipe; the parent sends it a chunk of calls and reads
one result per call, so it knows which call is running and since when. A worker past its deadline is
killed and replaced, its current call is reported as ``TIMEOUT`` and the rest of its chunk goes back to the
queue; a worker that dies (segfault, ``os._exit``, OOM kill) is handled the same way, as ``CRASH``.

Workers are started with 'forkserver' (default) or 'spawn', never 'fork': the trainer process has torch and
gloo threads, and forking a threaded process can deadlock the child. Start-up (importing sympy) is paid once
per worker, when the pool is built or a worker is replaced, never per call.

Workers ignore SIGTERM/SIGUSR1/SIGINT: on pre-emption Slurm/torchrun signal the whole process group, and
the trainer, which finishes its step before saving, still needs its graders (a forkserver killed by the same
signal is restarted by multiprocessing on the next worker start). Workers exit when the trainer's end of
their pipe closes.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import sys
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

StartMethod = Literal["forkserver", "spawn"]
TIMEOUT = "timeout"
CRASH = "crash"
ERROR = "error"
# a call's result: its float (or dict of floats), TIMEOUT / CRASH, or (ERROR, what it raised)
Result = float | dict[str, float] | str | tuple[str, str]
_READY = "ready"
_MAX_CHUNK = 32
_PRELOAD = ["megatron_grpo.reward", "megatron_grpo.reward.preload"]


@dataclass(frozen=True)
class Call:
    """One function call to run in a worker; ``fn`` must be a module-level function (pickled by name)."""

    key: int
    fn: Callable[..., float | dict[str, float]]
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class WorkerPool:
    """``run(calls)`` returns, per call, its ``Result``: the float (or dict of floats) it returned, ``TIMEOUT``,
    ``CRASH`` or ``(ERROR, "ExceptionType: message")``."""

    def __init__(
        self,
        workers: int | None = None,
        *,
        timeout_s: float = 5.0,
        start_method: StartMethod = "forkserver",
        startup_timeout_s: float = 120.0,
    ) -> None:
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(f"start_method: 'forkserver' or 'spawn' (not 'fork'), got {start_method!r}")
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            self._ctx.set_forkserver_preload(_PRELOAD)
        self._workers = [_Worker(self._ctx) for _ in range(workers or default_workers())]
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)
        self._await_ready()

    @property
    def size(self) -> int:
        return len(self._workers)

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    def run(self, calls: Sequence[Call]) -> dict[int, Result]:
        """Results keyed by ``Call.key``; every call gets one, whatever happens to the workers."""
        queue = deque(calls)
        results: dict[int, Result] = {}
        chunk = max(1, min(_MAX_CHUNK, math.ceil(len(queue) / (4 * self.size))))
        while queue or any(w.pending for w in self._workers):
            for worker in self._workers:
                if worker.ready and not worker.pending and queue:
                    worker.submit([queue.popleft() for _ in range(min(chunk, len(queue)))])
            self._wait_for_progress(queue, results)
        return results

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _await_ready(self) -> None:
        while not all(w.ready for w in self._workers):
            self._wait_for_progress(deque(), {})

    def _wait_for_progress(self, queue: deque[Call], results: dict[int, Result]) -> None:
        """Block until a result arrives, a worker starts, or the earliest deadline passes; then act on it."""
        active = [w for w in self._workers if w.pending or not w.ready]
        deadlines = [w.started_at + self.timeout_s for w in active if w.pending]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else self.startup_timeout_s
        wait([w.conn for w in active], timeout=timeout)
        for worker in active:
            outcome = worker.drain(results)
            if not worker.ready and time.monotonic() > worker.started_at + self.startup_timeout_s:
                raise RuntimeError(f"a reward worker did not start within {self.startup_timeout_s} s")
            if outcome is None and worker.pending and time.monotonic() > worker.started_at + self.timeout_s:
                outcome = TIMEOUT
            if outcome is not None:
                self._replace(worker, outcome, queue, results)

    def _replace(
        self, worker: _Worker, outcome: str, queue: deque[Call], results: dict[int, Result]
    ) -> None:
        """Report the worker's current call as ``outcome``, requeue the rest of its chunk, start a new one."""
        if worker.pending:
            results[worker.pending.popleft().key] = outcome
            queue.extendleft(reversed(worker.pending))
        elif not worker.ready:
            raise RuntimeError(f"a reward worker died during start-up ({outcome}); see its stderr" + _script_hint())
        worker.kill()
        self._workers[self._workers.index(worker)] = _Worker(self._ctx)


class _Worker:
    """One process and the parent's view of it: the calls sent and not yet answered, oldest first."""

    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child,), daemon=True, name="reward-worker")
        try:
            self.process.start()
        except (EOFError, ConnectionError) as exc:  # the fork server died while it started the worker
            raise RuntimeError("a reward worker could not be started; see the error above" + _script_hint()) from exc
        child.close()
        self.ready = False
        self.pending: deque[Call] = deque()
        self.started_at = time.monotonic()

    def submit(self, calls: list[Call]) -> None:
        self.pending.extend(calls)
        self.started_at = time.monotonic()
        try:
            self.conn.send([(c.fn, c.args, c.kwargs) for c in calls])
        except OSError:  # the worker died since its last result: drain() reports CRASH and it is replaced
            pass

    def drain(self, results: dict[int, Result]) -> str | None:
        """Read every available message; ``CRASH`` when the process is gone, else ``None``."""
        try:
            while self.conn.poll():
                message = self.conn.recv()
                if message == _READY:
                    self.ready = True
                    continue
                results[self.pending.popleft().key] = message
                self.started_at = time.monotonic()  # the next call's clock starts now
        except (EOFError, OSError):
            return CRASH
        return None

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def _script_hint() -> str:
    """The likeliest cause when the main program is a script: workers import it as they start ('spawn',
    'forkserver'), and an unguarded grading call at its top level then runs again inside them."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or getattr(main, "__spec__", None) is not None:
        return ""
    return (f". Reward workers import {path} as they start: if it grades (score_batch, RewardScorer) at its top "
            "level, put that under `if __name__ == \"__main__\":`")


def _shutdown(workers: list[_Worker]) -> None:
    for worker in workers:
        try:
            worker.conn.send(None)
        except (OSError, ValueError):
            pass
    for worker in workers:
        worker.process.join(timeout=1.0)
        if worker.process.is_alive():
            worker.kill()


def _serve(conn: Connection) -> None:
    """Worker main loop: one result message per call, in order."""
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    import megatron_grpo.reward  # noqa: F401 - registers the built-in rewards, pays the sympy import now
    from megatron_grpo.reward.symbolic import warm_up

    warm_up()  # the parser's first parses are slow: pay them now (a no-op when forked from a warm forkserver)

    conn.send(_READY)
    while True:
        try:
            batch = conn.recv()
        except EOFError:
            return
        if batch is None:
            return
        for fn, args, kwargs in batch:
            try:
                value = fn(*args, **kwargs)
                result: Result = value if isinstance(value, dict) else float(value)
            except Exception as exc:  # a buggy reward function must not take the worker down
                result = (ERROR, f"{type(exc).__name__}: {exc}"[:500])
            conn.send(result)
