"""GRPO / DAPO / Dr.GRPO algorithm config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from megatron_grpo.config.loader import ConfigError

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


@dataclass(frozen=True)
class AlgoConfig:
    advantage: Literal["grpo", "drgrpo", "rloo"] = "grpo"
    """grpo: (r - mean) / (std + eps); drgrpo: r - mean (no std); rloo: leave-one-out baseline."""
    adv_eps: float = 1e-6
    outcome_weight: float = 1.0
    """Scale of the outcome reward in the advantage (reference: 1.0)."""
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    """Upper clip; DAPO's clip-higher uses 0.28."""
    dual_clip: float | None = None
    """Dual-clip constant c > 1 bounding the loss for negative advantages (``None`` = off)."""
    loss_agg_mode: str = "token-mean"
    """One of token-mean (reference), seq-mean-token-sum, seq-mean-token-mean, seq-mean-token-sum-norm."""
    entropy_coef: float = 0.0
    kl_coef: float = 0.0
    """KL to a frozen reference model; 0 (reference) means no reference model is built."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    kl_in_reward: bool = False
    """Apply the KL penalty to the reward instead of the loss."""
    rollout_is: Literal["none", "token", "sequence"] = "token"
    """Importance-sampling correction trainer/sampler mismatch (reference: token, threshold 2.0)."""
    rollout_is_threshold: float = 2.0
    rollout_is_mask: bool = False
    """Mask (instead of truncate) tokens/sequences whose ratio exceeds the threshold."""
    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards are all equal and resample until the batch is full."""
    dynamic_sampling_max_tries: int = 4
    overlong_buffer: int = 0
    """DAPO overlong shaping: linear penalty over the last N tokens before the max length (0 = off)."""
    overlong_penalty: float = 1.0
    overlong_filter: bool = False
    """Mask truncated responses out of the loss."""
    ppo_epochs: int = 1
    mini_batch_prompts: int = 64
    """Prompts per optimizer step (reference: 64 = whole batch, one step per rollout)."""
    micro_batch_tokens: int = 32768
    """Token budget of one packed micro-batch per GPU (reference: 32768)."""

    def validate(self) -> None:
        if not 0 < self.clip_ratio_low < 1:
            raise ConfigError(f"clip_ratio_low: must be in (0, 1), got {self.clip_ratio_low}")
        if self.clip_ratio_high <= 0:
            raise ConfigError(f"clip_ratio_high: must be > 0, got {self.clip_ratio_high}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ConfigError(f"dual_clip: must be > 1, got {self.dual_clip}")
        if self.loss_agg_mode not in LOSS_AGG_MODES:
            raise ConfigError(f"loss_agg_mode: '{self.loss_agg_mode}' is not one of {list(LOSS_AGG_MODES)}")
        if self.rollout_is_threshold <= 0:
            raise ConfigError("rollout_is_threshold: must be > 0")
        if self.ppo_epochs < 1 or self.mini_batch_prompts < 1 or self.micro_batch_tokens < 1:
            raise ConfigError("ppo_epochs, mini_batch_prompts and micro_batch_tokens must be >= 1")
        if self.kl_coef < 0 or self.overlong_buffer < 0 or self.dynamic_sampling_max_tries < 1:
            raise ConfigError("kl_coef and overlong_buffer must be >= 0, dynamic_sampling_max_tries >= 1")
