"""Typed run configuration: one frozen dataclass per concern, loaded strictly from YAML.

``load_config("configs/qwen3_4b_dapo.yaml", ["optim.lr=2e-6"])`` returns a validated ``Config``.
Checks that need the world size (TP x PP dividing it) run in ``check_world``, at launch.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from megatron_grpo.config.algo import AlgoConfig
from megatron_grpo.config.data import DataConfig, EvalConfig, EvalSetConfig
from megatron_grpo.config.loader import ConfigError, apply_overrides, dump_yaml, from_dict, read_yaml, to_dict
from megatron_grpo.config.policy import ModelConfig, OptimizerConfig, ParallelConfig
from megatron_grpo.config.reward import RewardConfig
from megatron_grpo.config.rollout import RolloutConfig, SamplingConfig
from megatron_grpo.config.trainer import CheckpointConfig, LoggingConfig, TrainerConfig

__all__ = [
    "AlgoConfig", "CheckpointConfig", "Config", "ConfigError", "DataConfig", "EvalConfig", "EvalSetConfig",
    "LoggingConfig", "ModelConfig", "OptimizerConfig", "ParallelConfig", "RewardConfig", "RolloutConfig",
    "SamplingConfig", "TrainerConfig", "check_training", "check_world", "dump_yaml", "load_config", "to_dict",
]

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "assets" / "tiny_cpu.yaml"


@dataclass(frozen=True)
class Config:
    model: ModelConfig
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    optim: OptimizerConfig = field(default_factory=OptimizerConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def validate(self) -> None:
        """Cross-section checks; each names the keys involved."""
        _check_training_rollouts(self)
        _check_mini_batch(self)
        _check_overlong(self)
        _check_staleness(self)
        _check_routing_replay(self)
        _check_validation(self)
        _check_optional_packages(self)


def _check_validation(cfg: Config) -> None:
    """Validation that could only fail hours in, at its first run."""
    if cfg.eval.sets and cfg.eval.k > cfg.rollout.val.n:
        raise ConfigError(f"eval.k: {cfg.eval.k} exceeds the samples drawn per problem, rollout.val.n = "
                          f"{cfg.rollout.val.n}")
    if not cfg.eval.sets and (cfg.trainer.test_freq or cfg.trainer.val_before_train):
        asked = f"test_freq: {cfg.trainer.test_freq}" if cfg.trainer.test_freq else "val_before_train: true"
        raise ConfigError(f"trainer.{asked} asks for validation, but eval.sets is empty: add sets, or set "
                          "trainer.test_freq: 0 and trainer.val_before_train: false")


def _check_optional_packages(cfg: Config) -> None:
    """An optional sink the run would only reach after building everything else."""
    if cfg.logging.wandb and importlib.util.find_spec("wandb") is None:
        raise ConfigError("logging.wandb: true, but the wandb package is not installed "
                          "(pip install -e '.[wandb]')")


def check_training(cfg: Config) -> None:
    """What a training run needs beyond a valid config (``eval`` and ``plan`` do without it)."""
    if not cfg.data.train_files:
        raise ConfigError("data.train_files: empty; training needs at least one file")


def _check_training_rollouts(cfg: Config) -> None:
    if cfg.rollout.train.n < 2:
        raise ConfigError(
            f"rollout.train.n: GRPO needs >= 2 responses per prompt to form a group baseline, got {cfg.rollout.train.n}"
        )
    if cfg.rollout.train.temperature == 0:
        raise ConfigError("rollout.train.temperature: must be > 0 for training rollouts: the policy's log-probs "
                          "are taken at the sampling temperature (logits / T); greedy (0) is for rollout.val")


def _check_mini_batch(cfg: Config) -> None:
    if cfg.data.batch_prompts % cfg.algo.mini_batch_prompts:
        raise ConfigError(
            f"algo.mini_batch_prompts: {cfg.algo.mini_batch_prompts} must divide data.batch_prompts "
            f"{cfg.data.batch_prompts}"
        )


def _check_overlong(cfg: Config) -> None:
    if cfg.algo.overlong_buffer >= cfg.rollout.train.max_response_length:
        raise ConfigError(
            f"algo.overlong_buffer: {cfg.algo.overlong_buffer} must be < rollout.train.max_response_length "
            f"{cfg.rollout.train.max_response_length}"
        )


def _check_routing_replay(cfg: Config) -> None:
    if cfg.algo.routing_replay and cfg.model.recompute == "full":
        raise ConfigError("algo.routing_replay: model.recompute: full routes every token again in the backward "
                          "pass, which replay does not cover yet; use recompute: selective or none")


def _check_staleness(cfg: Config) -> None:
    if not cfg.rollout.max_staleness:
        return
    if cfg.algo.rollout_is == "none":
        raise ConfigError("rollout.max_staleness: off-policy samples need algo.rollout_is (token or sequence): its "
                          "weights are what correct for the engine's older policy")
    if cfg.algo.dynamic_sampling:
        raise ConfigError("rollout.max_staleness: dynamic sampling regenerates until a batch is full, which "
                          "needs the on-policy loop (max_staleness: 0)")


def check_world(cfg: Config, world_size: int, num_attention_heads: int, num_query_groups: int,
                num_layers: int, num_experts: int = 0) -> None:
    """Checks that need the launch world and the model shape (``num_experts`` 0: a dense model)."""
    tp, pp = cfg.parallel.tensor, cfg.parallel.pipeline
    if world_size % (tp * pp):
        raise ConfigError(f"parallel: world size {world_size} is not divisible by tensor x pipeline = {tp * pp}")
    if num_attention_heads % tp:
        raise ConfigError(f"parallel.tensor: {tp} does not divide num_attention_heads {num_attention_heads}")
    if num_query_groups % tp:
        raise ConfigError(f"parallel.tensor: {tp} does not divide num_key_value_heads {num_query_groups}")
    rtp = cfg.rollout.tensor_parallel
    if num_attention_heads % rtp:
        raise ConfigError(f"rollout.tensor_parallel: {rtp} does not divide num_attention_heads {num_attention_heads} "
                          "(vLLM splits the heads over an engine's workers)")
    if cfg.rollout.shares_gpus and world_size % rtp:
        raise ConfigError(f"rollout.tensor_parallel: {rtp} colocated engines need it to divide the world size "
                          f"{world_size} (an engine is that many consecutive trainer ranks)")
    chunks = pp * (cfg.parallel.virtual_pipeline or 1)
    if num_layers % chunks:
        raise ConfigError(f"parallel.pipeline: {chunks} model chunks do not divide num_hidden_layers {num_layers}")
    par = cfg.parallel
    if par.expert > 1 and not num_experts:
        raise ConfigError(f"parallel.expert: {par.expert} needs a mixture-of-experts model; this one is dense")
    if cfg.algo.routing_replay and not num_experts:
        raise ConfigError("algo.routing_replay: needs a mixture-of-experts model; this one is dense")
    if num_experts:
        if num_experts % par.expert:
            raise ConfigError(f"parallel.expert: {par.expert} does not divide the model's {num_experts} experts")
        experts = par.expert_tensor_size * par.expert * pp
        if world_size % experts:
            raise ConfigError(f"parallel: world size {world_size} is not divisible by expert_tensor x expert x "
                              f"pipeline = {experts}")
        if tp > 1 and not par.sequence_parallel:  # Megatron-Core refuses it only at the first training step
            raise ConfigError("parallel.sequence_parallel: an MoE model with tensor > 1 needs it (Megatron's "
                              "token dispatcher takes sequence-parallel activations)")
    dp = world_size // (tp * pp)
    if cfg.data.batch_prompts % dp:
        raise ConfigError(f"data.batch_prompts: {cfg.data.batch_prompts} is not divisible by data-parallel size {dp}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load ``path`` (default: the embedded tiny CPU config), apply dotted overrides, validate."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    # Paths written in the file are relative to the file; paths given as overrides, to the working dir.
    data = apply_overrides(_resolve_paths(read_yaml(path), path.resolve().parent), list(overrides or []))
    try:
        return from_dict(Config, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


_PATH_KEYS = (("model", "hf_config"), ("model", "tokenizer"), ("model", "hf_checkpoint"))


def _resolve_paths(data: dict, base: Path) -> dict:
    """Relative paths in a config file are relative to the file, so configs work from any cwd."""
    def fix(p):
        return p if not isinstance(p, str) or not p or Path(p).is_absolute() else str((base / p).resolve())

    for section, key in _PATH_KEYS:
        if isinstance(data.get(section), dict) and key in data[section]:
            data[section][key] = fix(data[section][key])
    if isinstance(data.get("data"), dict) and isinstance(data["data"].get("train_files"), list):
        data["data"]["train_files"] = [fix(p) for p in data["data"]["train_files"]]
    reward = data.get("reward")
    if isinstance(reward, dict) and isinstance(reward.get("function"), str) and ":" in reward["function"]:
        path, _, name = reward["function"].rpartition(":")  # file.py:name
        reward["function"] = f"{fix(path)}:{name}"
    if isinstance(data.get("eval"), dict) and isinstance(data["eval"].get("sets"), list):
        for s in data["eval"]["sets"]:
            if isinstance(s, dict) and "path" in s:
                s["path"] = fix(s["path"])
    return data
