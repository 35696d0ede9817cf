"""Trainer rank 0's side of engines that run in processes of their own (``rollout.server``).

``RemoteEngines`` is the ``RolloutEngine`` protocol over K such engines at once: a batch is split over
them, a refit bucket is checked by all of them, then broadcast once over the weight-transfer group
(``refit.transfer``) that every worker of every engine joined. Requests are pipelined: ``submit`` returns
at once and ``result`` waits, so the trainer can train while the engines generate. Each connection's
replies arrive in the order of its requests.

``LendingEngines`` is every trainer rank's side of engine processes on the trainer's own GPUs (placement
``colocated_process``): each rank lends a bucket to the worker on its GPU (``refit.ipc``), rank 0 tells the
engines to take it.
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

from megatron_grpo.children import die_with_parent
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

    def __init__(self, conns: list[Connection], group, bucket_bytes: int, procs: list[subprocess.Popen],
                 shares_gpus: bool = False):
        self._conns, self._group, self._bucket_bytes, self._procs = conns, group, bucket_bytes, procs
        self._shares_gpus = shares_gpus  # the engines sleep while the trainer uses their GPUs
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
            self.finish_update(version)
        except BaseException:
            self.abort_update()
            raise

    def finish_update(self, version: int) -> None:
        self._call_all("finish_update", version)

    def _send_bucket(self, bucket: list[tuple[str, torch.Tensor]]) -> None:
        metas, flat = transfer.pack(bucket)
        self._call_all("check_bucket", metas)  # nobody receives a bucket one of them rejects
        tickets = [self._send(i, "receive_bucket", metas) for i in range(self.count)]
        transfer.send(self._group, flat)
        self._replies(tickets)

    def receive_lent(self, metas: list[transfer.TensorMeta], handles: list[list]) -> None:
        """A bucket the trainer ranks lent (``refit.ipc``): ``handles[i]`` holds one per worker of engine i.
        Each engine checks it and takes it in one request (nobody blocks on a rejected one)."""
        self._replies([self._send(i, "receive_bucket", metas, handles[i]) for i in range(self.count)])

    def abort_update(self) -> None:
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
        """Engines on the trainer's GPUs free them (``VllmEngine.sleep``); engines of their own keep theirs."""
        if self._shares_gpus:
            self._call_all("sleep", level)

    def wake_up(self, tags: list[str] | None = None) -> None:
        """See ``sleep``."""
        if self._shares_gpus:
            self._call_all("wake_up", tags)

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


def _engine_preexec() -> None:
    """An engine the trainer spawned dies with it (kill -9 included), so nothing is left holding GPUs, and
    ignores the stop signals, which Slurm delivers to every process of the step: the trainer finishes its
    step, with its engines, before it saves. The ignore outlives exec and reaches vLLM's own processes."""
    die_with_parent()
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def spawn_engines(count: int, tensor_parallel: int, connect: str, key: str, first_gpu: int,
                  on_gpu: bool, first_index: int = 0) -> list[subprocess.Popen]:
    """Start ``count`` engine processes on this node, numbered from ``first_index``; on GPU engine i owns
    GPUs ``first_gpu + i * tp ...`` (disaggregated: the trainer's ranks hold the ones before)."""
    procs = []
    for i in range(count):
        env = {**os.environ, KEY_ENV: key}
        for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(var, None)  # the engine is not a trainer rank
        if on_gpu:
            gpus = range(first_gpu + i * tensor_parallel, first_gpu + (i + 1) * tensor_parallel)
            env["CUDA_VISIBLE_DEVICES"] = engine_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), gpus)
        procs.append(subprocess.Popen([sys.executable, "-m", "megatron_grpo.rollout.server", "--connect", connect,
                                       "--index", str(first_index + i)], env=env, preexec_fn=_engine_preexec))
    return procs


def engine_gpus(visible: str | None, gpus: range) -> str:
    """``CUDA_VISIBLE_DEVICES`` for an engine on this node's GPUs ``gpus``, numbered as the trainer sees them:
    under Slurm the trainer's own list may name other physical GPUs (``4,5,6,7``) than 0..n-1."""
    ids = [g.strip() for g in visible.split(",")] if visible else [str(g) for g in range(gpus.stop)]
    if gpus.stop > len(ids):
        raise EngineError(f"engine GPUs {list(gpus)}: only {len(ids)} visible (CUDA_VISIBLE_DEVICES={visible})")
    return ",".join(ids[g] for g in gpus)


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


def listen(cfg: RolloutConfig, host: str) -> tuple[Listener, str]:
    """Trainer rank 0's listener for engines, and the key they must know."""
    key = os.environ.get(KEY_ENV) or (secrets.token_hex(16) if cfg.launch_engines else None)
    if key is None:
        raise ConfigError(f"rollout.launch_engines: false needs {KEY_ENV} set for the trainer and the engines alike")
    listener = Listener(("0.0.0.0", cfg.engine_port), authkey=key.encode())
    if not cfg.launch_engines and os.environ.get(ADDRESS_ENV):
        publish_address(Path(os.environ[ADDRESS_ENV]), f"{host}:{listener.address[1]}")
    return listener, key


def connect_engines(cfg: RolloutConfig, model_dir: Path, tokenizer_dir: str, dtype: str, load_weights: bool,
                    host: str, backend: str, device: torch.device, first_gpu: int = 0,
                    timeout: float = 1800.0) -> RemoteEngines:
    """Trainer rank 0: listen for ``cfg.num_engines`` engines (spawned here when ``cfg.launch_engines``,
    else started elsewhere, e.g. on Slurm's rollout nodes, with ``--connect host:engine_port``), tell each
    what to build, and form the weight-transfer group with all their workers."""
    listener, key = listen(cfg, host)
    procs = (spawn_engines(cfg.num_engines, cfg.tensor_parallel, f"{host}:{listener.address[1]}", key, first_gpu,
                           device.type == "cuda") if cfg.launch_engines else [])
    return accept_engines(listener, procs, cfg.num_engines, cfg, model_dir, tokenizer_dir, dtype, load_weights,
                          host, backend, timeout)


def accept_engines(listener: Listener, procs: list[subprocess.Popen], count: int, cfg: RolloutConfig,
                   model_dir: Path, tokenizer_dir: str, dtype: str, load_weights: bool, host: str,
                   backend: str | None, timeout: float = 1800.0) -> RemoteEngines:
    """Trainer rank 0: take ``count`` engines' connections, tell each what to build, and (``backend``) form
    the weight-transfer group with all their workers; ``backend`` None: the engines share the trainer's
    GPUs and borrow its buckets instead (``LendingEngines``)."""
    log.info("waiting for %d engine(s) at %s:%d", count, host, listener.address[1])
    conns: list[Connection | None] = [None] * count
    deadline = time.monotonic() + timeout
    for _ in range(count):
        conn = _accept(listener, procs, deadline)
        _, index, hostname, pid = conn.recv()
        index = conns.index(None) if index < 0 else index
        if not 0 <= index < count or conns[index] is not None:
            raise EngineError(f"engine on {hostname} (pid {pid}) claims index {index}, which is taken or not in "
                              f"[0, {count}) (rollout.num_engines)")
        conns[index] = conn
    listener.close()
    tp = cfg.tensor_parallel
    address, store_socket = transfer.open_group(host, 1 + count * tp, backend) if backend else (None, None)
    for i, conn in enumerate(conns):
        conn.send(EngineSpec(str(model_dir), str(tokenizer_dir), cfg, dtype, load_weights, address, 1 + i * tp))
    group = transfer.join(address, 0, store_socket) if backend else None
    engines = RemoteEngines(conns, group, cfg.refit_bucket_mb << 20, procs, shares_gpus=backend is None)
    for i, conn in enumerate(conns):
        status, _, _ = conn.recv()
        if status != "ready":
            raise EngineError(f"engine {i} did not come up: {status}")
    return engines


class LendingEngines:
    """Every trainer rank's handle on engine processes that share the trainer's GPUs (``colocated_process``):
    the refit lends each bucket to the engine worker on this rank's GPU (``refit.ipc``: nothing crosses a
    link), and ``sleep``/``wake_up`` hand the GPUs over. Collective: every rank makes every call; rank 0
    (``remote``) speaks to the engines and every rank learns the outcome, so all raise together."""

    def __init__(self, remote: RemoteEngines | None, tensor_parallel: int, bucket_bytes: int,
                 procs: list[subprocess.Popen]):
        self.remote, self._tp, self._bucket_bytes, self._procs = remote, tensor_parallel, bucket_bytes, procs

    def _everywhere(self, call):
        """``call(remote)`` on rank 0; its result, or its error, on every rank."""
        import torch.distributed as dist

        box = [None]
        if self.remote is not None:
            try:
                box[0] = ("ok", call(self.remote))
            except Exception as exc:  # raised on every rank below
                box[0] = (type(exc).__name__, str(exc))
        dist.broadcast_object_list(box, src=0)
        status, value = box[0]
        if status == "ok":
            return value
        raise (WeightMismatchError if status == "WeightMismatchError" else EngineError)(value)

    def check_manifest(self, manifest: Mapping[str, tuple[tuple[int, ...], torch.dtype]]) -> None:
        self._everywhere(lambda remote: remote.check_manifest(dict(manifest)))

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int = 0) -> None:
        try:
            send_in_buckets(named_tensors, self._bucket_bytes, self._lend)
            self._everywhere(lambda remote: remote.finish_update(version))
        except BaseException:
            if self.remote is not None:
                self.remote.abort_update()
            raise

    def _lend(self, bucket: list[tuple[str, torch.Tensor]]) -> None:
        import torch.distributed as dist

        from megatron_grpo.refit import ipc

        metas, flat = transfer.pack(bucket)
        lent = ipc.lend(flat)
        try:
            handles = [None] * dist.get_world_size() if self.remote is not None else None
            dist.gather_object(lent.handle, handles, dst=0)
            self._everywhere(lambda remote: remote.receive_lent(
                metas, [handles[e * self._tp: (e + 1) * self._tp] for e in range(remote.count)]))
        finally:  # every engine has answered (or failed): the buffer may go
            lent.release()

    def weight_checksums(self) -> dict[str, float] | None:
        return self._everywhere(lambda remote: remote.weight_checksums())

    def sleep(self, level: int = 1) -> None:
        """Returns once every engine has freed the GPUs, on every rank (so none onloads the trainer early)."""
        self._everywhere(lambda remote: remote.sleep(level))

    def wake_up(self, tags: list[str] | None = None) -> None:
        self._everywhere(lambda remote: remote.wake_up(tags))

    def close(self) -> None:
        if self.remote is not None:
            self.remote.close()
        for proc in self._procs:  # the engines this rank started (each node's first rank)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
