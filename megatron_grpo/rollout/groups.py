"""Engine groups: every engine of a run, seen by the trainer as one. The loop does not know the placement.

Every trainer rank holds an ``EngineGroup``; its methods are collective over the trainer's world, and
every rank gets every sample back. ``local`` is what this rank's refit streams into (None: nothing).

    colocated       engines inside the trainer ranks, sharing their GPUs (``VllmEngine``): each run of
                    ``rollout.tensor_parallel`` consecutive ranks of a node is one engine, every rank its
                    TP worker (vLLM's external launcher: the ranks of an engine are fed the same requests
                    and compute the same samples); a batch is split over the engines
    colocated_process
                    the same engines on the same GPUs, in processes of their own (``rollout.server``,
                    started by each node's first rank), driven by trainer rank 0; every rank lends each
                    refit bucket to the worker on its GPU (``remote.LendingEngines``, ``refit.ipc``)
    disaggregated   ``rollout.num_engines`` engines of ``rollout.tensor_parallel`` workers each, in
                    processes of their own (``rollout.server``), driven by trainer rank 0
                    (``RemoteEngines``); a batch is split over them, and ``submit`` returns while they
                    generate, which is what lets a step's generation overlap the previous update

Prompt i of a call is seeded as prompt i wherever it lands, so the samples do not depend on the
placement or the number of engines. A placement is one entry of ``PLACEMENTS``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import torch.distributed as dist

from megatron_grpo.config.loader import ConfigError
from megatron_grpo.config.rollout import RolloutConfig, SamplingConfig
from megatron_grpo.rollout.types import RolloutEngine, Sample, chunk

HOST_ENV = "MEGATRON_GRPO_ENGINE_HOST"
"""The name engines on other nodes reach trainer rank 0 by (default: its hostname)."""


class EngineGroup:
    local: RolloutEngine | None

    def submit(self, prompts: list[list[int]], sampling: SamplingConfig, seed: int, first_index: int = 0,
               routing: bool = False):
        """Start generating ``sampling.n`` samples per prompt (``routing``: with each one's MoE routing);
        ``collect`` returns them."""
        raise NotImplementedError

    def collect(self, pending) -> list[list[Sample]]:
        """Collective: every rank gets result[i][j], sample j of prompt i."""
        raise NotImplementedError

    def generate(self, prompts: list[list[int]], sampling: SamplingConfig, seed: int,
                 first_index: int = 0) -> list[list[Sample]]:
        return self.collect(self.submit(prompts, sampling, seed, first_index))

    def score_each(self, sequences: list[list[int]], prompt_lens: list[int]) -> list[list[list[float]]]:
        """Collective: rank 0 gets each engine's log-probs of the given tokens (the refit probe); the
        others []."""
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        """Engine-side counters since the last call (rank 0)."""
        return {}

    def close(self) -> None:
        if self.local is not None:
            self.local.close()


class ColocatedEngines(EngineGroup):
    """``tensor_parallel`` consecutive ranks form engine ``rank // tensor_parallel``; its first rank speaks
    for it (the others compute the same samples)."""

    def __init__(self, engine: RolloutEngine, tensor_parallel: int = 1):
        self.local, self.tensor_parallel = engine, tensor_parallel

    @property
    def count(self) -> int:
        return dist.get_world_size() // self.tensor_parallel

    @property
    def _speaks(self) -> bool:
        return dist.get_rank() % self.tensor_parallel == 0

    def submit(self, prompts, sampling, seed, first_index=0, routing=False):
        mine = chunk(len(prompts), self.count, dist.get_rank() // self.tensor_parallel)
        samples = (self.local.generate([prompts[i] for i in mine], sampling, seed, first_index + mine.start, routing)
                   if mine else [])
        return samples if self._speaks else None

    def collect(self, pending) -> list[list[Sample]]:
        return [group for p in self._gather(pending) for group in p]

    def score_each(self, sequences, prompt_lens):
        scores = self.local.score(sequences, prompt_lens)  # all of an engine's ranks compute it together
        every = self._gather(scores if self._speaks else None)
        return every if dist.get_rank() == 0 else []

    def _gather(self, mine) -> list:
        """Every engine's ``mine``, in engine order (collective)."""
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, mine)
        return parts[:: self.tensor_parallel]


class ProcessEngines(EngineGroup):
    """Engines in processes of their own, driven by trainer rank 0's ``remote`` (None elsewhere). ``local``,
    what the refit streams into: ``remote`` itself (disaggregated; the other ranks only help gather), or
    every rank's ``LendingEngines`` (colocated_process)."""

    def __init__(self, remote, local=None):
        self.remote = remote
        self.local = remote if local is None else local

    def submit(self, prompts, sampling, seed, first_index=0, routing=False):
        return self.remote.submit(prompts, sampling, seed, first_index, routing) if self.remote is not None else None

    def collect(self, pending) -> list[list[Sample]]:
        box = [self.remote.result(pending) if self.remote is not None else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def score_each(self, sequences, prompt_lens):
        return self.remote.score_each(sequences, prompt_lens) if self.remote is not None else []

    def metrics(self) -> dict[str, float]:
        if self.remote is None:
            return {}
        idle, self.remote.idle_seconds = self.remote.idle_seconds, [0.0] * self.remote.count
        return {"engine/idle_s": max(idle)}


def _ranks_per_node() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))


def _colocated(cfg: RolloutConfig, model_dir: Path, tokenizer_dir: str, dtype: str, load_weights: bool) -> EngineGroup:
    from megatron_grpo.rollout.vllm_engine import build_engine

    check_engine_fits_node(cfg.tensor_parallel, _ranks_per_node())
    # All ranks build together: vLLM's own groups are made collectively over the trainer's world, its TP
    # groups from consecutive ranks.
    engine = build_engine(model_dir, tokenizer_dir, cfg, dtype, load_weights=load_weights)
    return ColocatedEngines(engine, cfg.tensor_parallel)


def check_engine_fits_node(tensor_parallel: int, ranks_per_node: int) -> None:
    """A colocated engine's TP group is consecutive ranks of one node: its all-reduces stay off the network.
    (That it divides the world is ``config.check_world``'s, at load time.)"""
    if ranks_per_node % tensor_parallel:
        raise ConfigError(f"rollout.tensor_parallel: {tensor_parallel} colocated engines need it to divide the ranks "
                          f"per node ({ranks_per_node}): an engine's workers are consecutive ranks of one node")


def _disaggregated(cfg: RolloutConfig, model_dir: Path, tokenizer_dir: str, dtype: str,
                   load_weights: bool) -> EngineGroup:
    from megatron_grpo import platform

    remote = None
    if dist.get_rank() == 0:
        from megatron_grpo.rollout.remote import connect_engines

        # spawned engines are on this node; engines elsewhere reach rank 0's host by its name
        host = "127.0.0.1" if cfg.launch_engines else os.environ.get(HOST_ENV, socket.gethostname())
        first_gpu = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # the trainer's GPUs come first
        remote = connect_engines(cfg, model_dir, tokenizer_dir, dtype, load_weights, host,
                                 platform.dist_backend(), platform.device(), first_gpu)
    dist.barrier()
    return ProcessEngines(remote)


def _colocated_process(cfg: RolloutConfig, model_dir: Path, tokenizer_dir: str, dtype: str,
                       load_weights: bool) -> EngineGroup:
    """Each node's first rank starts the node's engines, engine e on the GPUs of trainer ranks
    ``e * tp ...`` (so worker w of engine e shares trainer rank ``e * tp + w``'s GPU); all connect to rank 0."""
    from megatron_grpo import platform
    from megatron_grpo.rollout.remote import LendingEngines, accept_engines, listen, spawn_engines

    tp, world, per_node, rank = cfg.tensor_parallel, dist.get_world_size(), _ranks_per_node(), dist.get_rank()
    check_engine_fits_node(tp, per_node)
    box, listener = [None], None
    if rank == 0:
        host = "127.0.0.1" if per_node == world else os.environ.get(HOST_ENV, socket.gethostname())
        listener, key = listen(cfg, host)
        box[0] = (host, listener.address[1], key)
    dist.broadcast_object_list(box, src=0)
    host, port, key = box[0]
    procs = []
    if rank % per_node == 0:
        procs = spawn_engines(per_node // tp, tp, f"{host}:{port}", key, first_gpu=0,
                              on_gpu=platform.device().type == "cuda", first_index=rank // tp)
    remote = (accept_engines(listener, procs, world // tp, cfg, model_dir, tokenizer_dir, dtype, load_weights, host,
                             backend=None) if rank == 0 else None)
    dist.barrier()
    return ProcessEngines(remote, LendingEngines(remote, tp, cfg.refit_bucket_mb << 20, procs))


PLACEMENTS: dict[str, Callable[..., EngineGroup]] = {
    "colocated": _colocated, "colocated_process": _colocated_process, "disaggregated": _disaggregated}


def build_engines(cfg: RolloutConfig, model_dir: Path, tokenizer_dir: str, dtype: str,
                  load_weights: bool) -> EngineGroup:
    """Collective: the run's engines, placed as ``cfg.placement`` says."""
    return PLACEMENTS[cfg.placement](cfg, model_dir, tokenizer_dir, dtype, load_weights)
