"""Trainer rank 0's side of engines that run in processes of their own (``rollout.server``).

``RemoteEngines`` is the ``RolloutEngine`` protocol over K such engines at once: a batch is split over
them, a refit bucket is checked by all of them, then broadcast once over the weight-transfer group
(``refit.transfer``) that every worker of every engine joined. Requests are pipelined: ``submit`` returns
at once and ``result`` waits, so the trainer can train while the engines generate. Each connection's
replies arrive in the order of its requests.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from multiprocessing.connection import Connection, Listener
from pathlib import Path

import torch

from megatron_grpo.config.loader import ConfigError
from megatron_grpo.config.rollout import RolloutConfig, SamplingConfig
from megatron_grpo.refit import transfer
from megatron_grpo.rollout.server import ADDRESS_ENV, KEY_ENV, EngineSpec, publish_address
from megatron_grpo.rollout.types import Sample, chunk, send_in_buckets
from megatron_grpo.rollout.weight_specs import WeightMismatchError, checksums_agree

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """An engine process failed a request or went away; the message names the engine."""


class RemoteEngines:
    """Build with ``connect_engines``."""

    def __init__(self, conns: list[Connection], group, bucket_bytes: int, procs: list[subprocess.Popen]):
        self._conns, self._group, self._bucket_bytes, self._procs = conns, group, bucket_bytes, procs
        self._sent = [0] * len(conns)
        self._read = [0] * len(conns)
        self._stash: dict[tuple[int, int], tuple] = {}
        self.idle_seconds = [0.0] * len(conns)  # engine side of the wait: time spent with nothing to do

    @property
    def count(self) -> int:
        return len(self._conns)

    # ---- request plumbing -------------------------------------------------------------------------

    def _send(self, i: int, name: str, *args) -> tuple[int, int]:
        try:
            self._conns[i].send((name, args))
        except OSError as exc:
            raise EngineError(f"engine {i}: cannot send {name!r} ({exc}){self._exit_note(i)}") from None
        self._sent[i] += 1
        return i, self._sent[i] - 1

    def _reply(self, ticket: tuple[int, int]):
        i, seq = ticket
        while (i, seq) not in self._stash:
            try:
                self._stash[(i, self._read[i])] = self._conns[i].recv()
            except (EOFError, OSError):
                raise EngineError(f"engine {i} closed its connection{self._exit_note(i)}") from None
            self._read[i] += 1
        status, result, idle = self._stash.pop((i, seq))
        self.idle_seconds[i] += idle
        if status == "error":
            kind, message = result
            error = WeightMismatchError if kind == "WeightMismatchError" else EngineError
            raise error(f"engine {i}: {message}")
        return result

    def _call_all(self, name: str, *args) -> list:
        """``name`` on every engine."""
        return self._replies([self._send(i, name, *args) for i in range(self.count)])

    def _replies(self, tickets: list[tuple[int, int]]) -> list:
        """Every reply is read before the first error is raised: no engine's answer is left in the pipe."""
        results, errors = [], []
        for t in tickets:
            try:
                results.append(self._reply(t))
            except (EngineError, WeightMismatchError) as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return results

    def _exit_note(self, i: int) -> str:
        if i < len(self._procs) and (code := self._procs[i].poll()) is not None:
            return f" (its process exited with code {code})"
        return ""

    # ---- generation -------------------------------------------------------------------------------

    def submit(self, prompts: list[list[int]], sampling: SamplingConfig, seed: int,
               first_index: int = 0, routing: bool = False) -> list[tuple[int, int]]:
        """Start generating, one request per engine; prompt i is seeded as prompt ``first_index + i``
        wherever it lands. Returns the requests' tickets, for ``result``."""
        parts = [chunk(len(prompts), self.count, i) for i in range(self.count)]
        return [self._send(i, "generate", [prompts[j] for j in part], sampling, seed, first_index + part.start,
                           routing) for i, part in enumerate(parts) if part]

    def result(self, tickets: list[tuple[int, int]]) -> list[list[Sample]]:
        return [group for t in tickets for group in self._reply(t)]

    def generate(self, prompts: list[list[int]], sampling: SamplingConfig, seed: int,
                 first_index: int = 0, routing: bool = False) -> list[list[Sample]]:
        return self.result(self.submit(prompts, sampling, seed, first_index, routing))

    def score(self, sequences: list[list[int]], prompt_lens: list[int]) -> list[list[float]]:
        """Engine 0's log-probs (``score_each``: every engine's)."""
        return self._reply(self._send(0, "score", sequences, prompt_lens))

    def score_each(self, sequences: list[list[int]], prompt_lens: list[int]) -> list[list[list[float]]]:
        return self._call_all("score", sequences, prompt_lens)

    # ---- weight updates ---------------------------------------------------------------------------

    def check_manifest(self, manifest: Mapping[str, tuple[tuple[int, ...], torch.dtype]]) -> None:
        self._call_all("check_manifest", dict(manifest))

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int = 0) -> None:
        """Every engine takes every bucket; all of them hold ``version`` after the last one."""
        try:
            send_in_buckets(named_tensors, self._bucket_bytes, self._send_bucket)
            self._call_all("finish_update", version)
        except BaseException:
            self._abort()
            raise

    def _send_bucket(self, bucket: list[tuple[str, torch.Tensor]]) -> None:
        metas, flat = transfer.pack(bucket)
        self._call_all("check_bucket", metas)  # nobody receives a bucket one of them rejects
        tickets = [self._send(i, "receive_bucket", metas) for i in range(self.count)]
        transfer.send(self._group, flat)
        self._replies(tickets)

    def _abort(self) -> None:
        try:
            for i, state in enumerate(self._call_all("abort_update")):
                log.warning("refit aborted: engine %d: %s", i, state)
        except EngineError as exc:
            log.error("refit aborted, and an engine could not say its state: %s", exc)

    def weight_checksums(self) -> dict[str, float] | None:
        """What every engine holds; a tensor on which engines disagree reads NaN (logged), so the refit's
        verdict fails. None when an engine cannot read its weights back (TP > 1)."""
        held = self._call_all("weight_checksums")
        if any(h is None for h in held):
            return None
        merged = dict(held[0])
        for i, h in enumerate(held[1:], start=1):
            for name, value in h.items():
                if not checksums_agree(value, merged[name]):
                    log.error("refit checksum: engine %d holds %.9g for %s, engine 0 %.9g", i, value, name,
                              merged[name])
                    merged[name] = float("nan")
        return merged

    # ---- memory and lifetime ------------------------------------------------------------------------

    def sleep(self, level: int = 1) -> None:
        """Engines of their own keep their GPUs: nothing to free."""

    def wake_up(self, tags: list[str] | None = None) -> None:
        """See ``sleep``."""

    def close(self) -> None:
        for i in range(self.count):
            try:
                self._reply(self._send(i, "close"))
            except EngineError as exc:
                log.warning("%s", exc)
        for proc in self._procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _die_with_parent() -> None:
    """An engine the trainer spawned dies with it (kill -9 included): nothing is left holding GPUs."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn_engines(count: int, tensor_parallel: int, connect: str, key: str, first_gpu: int,
                  on_gpu: bool) -> list[subprocess.Popen]:
    """Start ``count`` engine processes on this node; on GPU engine i owns GPUs
    ``first_gpu + i * tp ...`` (the trainer's ranks hold the ones before)."""
    procs = []
    for i in range(count):
        env = {**os.environ, KEY_ENV: key}
        for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(var, None)  # the engine is not a trainer rank
        if on_gpu:
            gpus = range(first_gpu + i * tensor_parallel, first_gpu + (i + 1) * tensor_parallel)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        procs.append(subprocess.Popen([sys.executable, "-m", "megatron_grpo.rollout.server", "--connect", connect,
                                       "--index", str(i)], env=env, preexec_fn=_die_with_parent))
    return procs


def _accept(listener: Listener, procs: list[subprocess.Popen], deadline: float) -> Connection:
    """The next engine's connection; fails early when a spawned engine died before connecting."""
    sock = listener._listener._socket  # multiprocessing's Listener has no accept timeout of its own
    while True:
        if dead := [p for p in procs if p.poll() is not None]:
            raise EngineError(f"engine process {dead[0].pid} exited with code {dead[0].returncode} before it connected")
        if time.monotonic() > deadline:
            raise EngineError("timed out waiting for the engines to connect (rollout.num_engines, launch_engines)")
        sock.settimeout(2.0)
        try:
            return listener.accept()
        except TimeoutError:
            continue


def connect_engines(cfg: RolloutConfig, model_dir: Path, tokenizer_dir: str, dtype: str, load_weights: bool,
                    host: str, backend: str, device: torch.device, first_gpu: int = 0,
                    timeout: float = 1800.0) -> RemoteEngines:
    """Trainer rank 0: listen for ``cfg.num_engines`` engines (spawned here when ``cfg.launch_engines``,
    else started elsewhere, e.g. on Slurm's rollout nodes, with ``--connect host:engine_port``), tell each
    what to build, and form the weight-transfer group with all their workers."""

    key = os.environ.get(KEY_ENV) or (secrets.token_hex(16) if cfg.launch_engines else None)
    if key is None:
        raise ConfigError(f"rollout.launch_engines: false needs {KEY_ENV} set for the trainer and the engines alike")
    listener = Listener(("0.0.0.0", cfg.engine_port), authkey=key.encode())
    port = listener.address[1]
    if not cfg.launch_engines and os.environ.get(ADDRESS_ENV):
        publish_address(Path(os.environ[ADDRESS_ENV]), f"{host}:{port}")
    procs = (spawn_engines(cfg.num_engines, cfg.tensor_parallel, f"{host}:{port}", key, first_gpu,
                           device.type == "cuda") if cfg.launch_engines else [])
    log.info("waiting for %d engine(s) at %s:%d", cfg.num_engines, host, port)
    conns: list[Connection | None] = [None] * cfg.num_engines
    deadline = time.monotonic() + timeout
    for _ in range(cfg.num_engines):
        conn = _accept(listener, procs, deadline)
        _, index, hostname, pid = conn.recv()
        index = conns.index(None) if index < 0 else index
        if not 0 <= index < cfg.num_engines or conns[index] is not None:
            raise EngineError(f"engine on {hostname} (pid {pid}) claims index {index}, which is taken or not in "
                              f"[0, rollout.num_engines={cfg.num_engines})")
        conns[index] = conn
    listener.close()
    address, store_socket = transfer.open_group(host, 1 + cfg.num_engines * cfg.tensor_parallel, backend)
    for i, conn in enumerate(conns):
        conn.send(EngineSpec(str(model_dir), str(tokenizer_dir), cfg, dtype, load_weights, address,
                             1 + i * cfg.tensor_parallel))
    group = transfer.join(address, 0, store_socket)
    engines = RemoteEngines(conns, group, cfg.refit_bucket_mb << 20, procs)
    for i, conn in enumerate(conns):
        status, _, _ = conn.recv()
        if status != "ready":
            raise EngineError(f"engine {i} did not come up: {status}")
    return engines
