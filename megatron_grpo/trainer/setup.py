"""Build everything a run needs, cheap checks first: config/data/tokenizer errors surface before any
model or engine is built. Also the run directory's provenance files and resumable trainer state."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import pickle
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import megatron_grpo
from megatron_grpo import platform
from megatron_grpo.config import Config, ConfigError, check_world, dump_yaml
from megatron_grpo.data import PromptDataset, PromptSampler, load_train_dataset
from megatron_grpo.families import ModelArch, hf_config_path, load_arch
from megatron_grpo.launch import DistEnv, init_distributed
from megatron_grpo.model.policy import MegatronPolicy
from megatron_grpo.model.reference import ReferencePolicy
from megatron_grpo.platform import DTYPES
from megatron_grpo.rollout.groups import EngineGroup
from megatron_grpo.trainer.colocate import Colocation
from megatron_grpo.trainer.rollout import RolloutQueue

log = logging.getLogger(__name__)


@dataclass
class Run:
    cfg: Config
    run_dir: Path
    env: DistEnv
    arch: ModelArch
    tokenizer: object
    dataset: PromptDataset
    sampler: PromptSampler          # global batches: every rank sees all B prompts
    total_steps: int
    policy: MegatronPolicy
    reference: ReferencePolicy | None  # the KL term's frozen initial weights (algo.kl_coef > 0)
    engines: EngineGroup            # every engine of the run, in its placement
    scorer: object                  # this rank's reward workers
    eval_sets: list
    colocation: Colocation          # who holds the accelerator in each stage of a step
    rollouts: RolloutQueue          # the batches in flight ahead of training
    step: int = 0                   # last completed step
    nonfinite_streak: int = 0

    @property
    def is_rank0(self) -> bool:
        return self.env.rank == 0

    @property
    def engine_dtype(self) -> torch.dtype:
        """What the refit sends: the engine's dtype."""
        return DTYPES[self.cfg.rollout.engine_dtype(self.cfg.model.dtype)]


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def load_tokenizer(cfg: Config, arch: ModelArch):
    from transformers import AutoTokenizer

    if not cfg.model.tokenizer:
        raise ConfigError("model.tokenizer: required (an HF tokenizer directory)")
    directory = Path(cfg.model.tokenizer)
    if not directory.is_dir() or not any((directory / f).is_file() for f in TOKENIZER_FILES):
        what = "has none of the tokenizer files" if directory.is_dir() else "is not a directory"
        raise ConfigError(f"model.tokenizer: {directory} {what} (expected one of {', '.join(TOKENIZER_FILES)})")
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.tokenizer)
    if len(tokenizer) > arch.vocab_size:
        raise ConfigError(
            f"model.tokenizer: {cfg.model.tokenizer} has {len(tokenizer)} tokens but the model's vocab_size is "
            f"{arch.vocab_size} ({cfg.model.hf_config})"
        )
    return tokenizer


def engine_model_dir(cfg: Config, run_dir: Path, rank: int) -> tuple[Path, bool]:
    """(HF directory the engine loads, whether it holds weights). Without a checkpoint the engine starts
    from dummy weights in a directory holding just the config; the first refit brings the policy's."""
    if cfg.model.hf_checkpoint:
        return Path(cfg.model.hf_checkpoint), True
    target = run_dir / "engine_model" / f"rank{rank}"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(hf_config_path(cfg.model.hf_config), target / "config.json")
    return target, False


def build_run(cfg: Config, run_dir: Path) -> Run:
    env = init_distributed(cfg.parallel, cfg.trainer.seed)
    arch = load_arch(cfg.model.hf_config)
    check_world(cfg, env.world_size, arch.num_attention_heads, arch.num_query_groups, arch.num_layers,
                arch.num_experts)
    tokenizer = load_tokenizer(cfg, arch)
    dataset, _ = load_train_dataset(cfg.data, tokenizer, cfg.rollout.max_prompt_length)
    sampler = PromptSampler.from_config(cfg.data, len(dataset))
    total_steps = min(cfg.trainer.max_steps or 10**9, sampler.steps_per_epoch * cfg.trainer.total_epochs)
    eval_sets = _eval_sets(cfg, tokenizer) if cfg.trainer.test_freq or cfg.trainer.val_before_train else []
    hf_weights = None
    if cfg.model.hf_checkpoint:
        from megatron_grpo.convert.hf_io import HFCheckpoint
        from megatron_grpo.convert.verify import check_hf_checkpoint

        hf_weights = HFCheckpoint(cfg.model.hf_checkpoint)
        check_hf_checkpoint(hf_weights, arch)  # names, shapes, dtypes from the headers, before the model is built
    policy = MegatronPolicy(arch, cfg.model, cfg.parallel, cfg.optim, total_steps, hf_weights, cfg.trainer.seed)
    # the initial weights, taken before a checkpoint is loaded: a resumed run's reference is the same
    reference = ReferencePolicy(policy.model) if cfg.algo.kl_coef > 0 else None
    from megatron_grpo import reward
    from megatron_grpo.rollout.groups import build_engines

    model_dir, has_weights = engine_model_dir(cfg, run_dir, env.rank)
    engines = build_engines(cfg.rollout, model_dir, cfg.model.tokenizer, cfg.rollout.engine_dtype(cfg.model.dtype),
                            load_weights=has_weights)
    scorer = reward.from_config(cfg.reward)
    colocation = Colocation(engines.local, policy, cfg.rollout.shares_gpus and cfg.rollout.offload_trainer)
    rollouts = RolloutQueue(engines, scorer, dataset, sampler, cfg.rollout.train, cfg.trainer.seed,
                            cfg.rollout.max_staleness, total_steps, routing=cfg.algo.routing_replay)
    return Run(cfg, run_dir, env, arch, tokenizer, dataset, sampler, total_steps, policy, reference, engines, scorer,
               eval_sets, colocation, rollouts)


def _eval_sets(cfg: Config, tokenizer) -> list:
    from megatron_grpo.eval import load_eval_sets

    return load_eval_sets(cfg.eval, cfg.data, tokenizer) if cfg.eval.sets else []


def write_provenance(cfg: Config, run_dir: Path) -> None:
    """The resolved config (``rollout.dtype: auto`` as this platform resolved it) and the versions/commit
    that produced the run (rank 0)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rollout = dataclasses.replace(cfg.rollout, dtype=cfg.rollout.engine_dtype(cfg.model.dtype))
    dump_yaml(dataclasses.replace(cfg, rollout=rollout), run_dir / "config.yaml")
    versions = {"megatron_grpo": megatron_grpo.__version__, "torch": torch.__version__,
                "git_commit": _git_commit()}
    for package in ("megatron.core", "vllm", "transformers"):
        try:
            module = __import__(package, fromlist=["__version__"])
            versions[package] = getattr(module, "__version__", "unknown")
        except ImportError:
            versions[package] = None
    (run_dir / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(megatron_grpo.__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def trainer_state(run: Run) -> dict:
    """JSON-serialisable state saved next to the model: position, counters and RNG states (host, numpy,
    Python, and on CUDA this rank's device generator and Megatron's tracker streams)."""
    rng = {"torch": platform.rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    return {"step": run.step, "sampler": run.rollouts.sampler_state(), "nonfinite_streak": run.nonfinite_streak,
            "rng": base64.b64encode(pickle.dumps(rng)).decode()}


def restore_trainer_state(run: Run, state: dict) -> None:
    run.step = int(state["step"])
    run.sampler.load_state_dict(state["sampler"])
    run.nonfinite_streak = int(state["nonfinite_streak"])
    rng = pickle.loads(base64.b64decode(state["rng"]))
    if isinstance(rng, tuple):  # checkpoints before the CUDA state was saved: (torch, numpy, python)
        rng = {"torch": {"cpu": rng[0]}, "numpy": rng[1], "python": rng[2]}
    platform.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
