"""Hugging Face directory -> Megatron ``torch_dist`` checkpoint at a chosen TP x PP layout.

Spawns TP*PP gloo processes (CPU is enough): each builds only its own model shard, fills it from the
safetensors tensor by tensor (``load_hf_weights``) and joins one collective ``dist_checkpointing``
save. The result is a model-only checkpoint root (``step_0`` + ``latest``) that the trainer loads with
``load_checkpoint(root, policy, load_optimizer=False)``; being layout-free, it loads at any layout.
The HF directory is checked (names and shapes, from the headers) before any process starts.
"""

from __future__ import annotations

import os
from multiprocessing.connection import wait
from pathlib import Path

import torch.multiprocessing as mp

from megatron_grpo.checkpoint.files import step_dir
from megatron_grpo.convert.hf_io import HFCheckpoint
from megatron_grpo.convert.verify import ConvertError, check_hf_checkpoint
from megatron_grpo.families import load_arch


def import_hf(hf_dir: str | Path, out: str | Path, tp: int = 1, pp: int = 1, dtype: str = "fp32",
              make_vocab_size_divisible_by: int = 128, step: int = 0) -> Path:
    """Write ``<out>/step_<step>`` from ``hf_dir``; returns that directory."""
    arch = load_arch(hf_dir)
    check_hf_checkpoint(HFCheckpoint(hf_dir), arch)
    if arch.num_layers % pp:
        raise ConvertError(f"--pp {pp} does not divide the {arch.num_layers} layers")
    if arch.num_query_groups % tp:
        raise ConvertError(f"--tp {tp} does not divide the {arch.num_query_groups} query groups")
    spawn(tp * pp, _convert_rank, (str(hf_dir), str(out), tp, pp, dtype, make_vocab_size_divisible_by, step))
    return step_dir(out, step)


def _convert_rank(hf_dir: str, out: str, tp: int, pp: int, dtype: str, divisible_by: int, step: int) -> None:
    from megatron_grpo.checkpoint.state import save_state
    from megatron_grpo.config import ModelConfig, ParallelConfig
    from megatron_grpo.convert.weights import load_hf_weights
    from megatron_grpo.families import padded_vocab_size
    from megatron_grpo.launch import init_distributed, shutdown
    from megatron_grpo.model.builder import build_model

    par = ParallelConfig(tensor=tp, pipeline=pp, distributed_optimizer=False)
    init_distributed(par, seed=0)
    arch = load_arch(hf_dir)
    chunks = build_model(arch, ModelConfig(hf_config=hf_dir, dtype=dtype, make_vocab_size_divisible_by=divisible_by),
                         par)
    load_hf_weights(chunks, arch, HFCheckpoint(hf_dir), padded_vocab_size(arch.vocab_size, divisible_by, tp),
                    where=hf_dir)
    save_state(out, step, chunks)
    shutdown()


def _rank_main(rank: int, world: int, port: int, fn, args) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    fn(*args)


def spawn(world: int, fn, args: tuple) -> None:
    """Run ``fn(*args)`` on ``world`` local processes; if one fails, stop the rest (they would wait
    forever in a collective) and raise."""
    from megatron_grpo.launch import free_port

    port = free_port()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, fn, args)) for r in range(world)]
    for p in procs:
        p.start()
    running = list(procs)
    while running:
        wait([p.sentinel for p in running])
        running = [p for p in procs if p.exitcode is None]
        if any(p.exitcode for p in procs if p.exitcode is not None):
            break
    for p in running:
        p.kill()
        p.join()
    failed = {r: p.exitcode for r, p in enumerate(procs) if p.exitcode}
    if failed:
        raise ConvertError(f"conversion process(es) failed (rank: exit code) {failed}; see the traceback above")
