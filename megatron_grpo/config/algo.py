"""GRPO / DAPO / Dr.GRPO algorithm config (the ``algo`` section); the math lives in ``megatron_grpo.algo``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from megatron_grpo.config.loader import ConfigError

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


@dataclass(frozen=True)
class AlgoConfig:
    advantage: Literal["grpo", "drgrpo", "rloo"] = "grpo"
    """grpo: (r - mean) / (std + eps) per group; drgrpo: r - mean (no std); rloo: r - mean of the others."""
    adv_eps: float = 1e-6
    """Added to the group std before dividing (grpo only)."""
    outcome_weight: float = 1.0
    """Scale of the outcome advantage (reference: 1.0)."""
    clip_ratio_low: float = 0.2
    """PPO clip: the ratio is clipped below at 1 - clip_ratio_low."""
    clip_ratio_high: float = 0.2
    """PPO clip: the ratio is clipped above at 1 + clip_ratio_high; DAPO's clip-higher uses 0.28."""
    dual_clip: float | None = None
    """Dual-clip constant c > 1 bounding the loss at c * |A| for negative advantages (``None`` = off)."""
    loss_agg_mode: str = "token-mean"
    """token-mean (reference), seq-mean-token-sum, seq-mean-token-mean, seq-mean-token-sum-norm (Dr.GRPO)."""
    entropy_coef: float = 0.0
    """Entropy bonus subtracted from the loss (reference: 0, no bonus)."""
    kl_coef: float = 0.0
    """KL to a frozen reference model; 0 (reference) means no reference model is built."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """k1 = log ratio, k2 = log ratio^2 / 2, k3 = ratio - 1 - log ratio (verl's "low_var_kl")."""
    kl_in_reward: bool = False
    """Subtract kl_coef * (summed KL of the response) from the reward instead of adding a KL loss."""
    rollout_is: Literal["none", "token", "sequence"] = "token"
    """Importance-sampling correction of the trainer/sampler mismatch (reference: token, threshold 2.0)."""
    rollout_is_threshold: float = 2.0
    """Upper bound of the IS weight exp(logp_trainer_old - logp_sampler)."""
    rollout_is_mask: bool = False
    """Mask (instead of truncate) tokens/sequences whose IS weight exceeds the threshold."""
    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards are all equal and sample more until the batch is full."""
    dynamic_sampling_max_tries: int = 4
    """Generation rounds per step before dynamic sampling gives up and trains on the groups it has."""
    overlong_buffer: int = 0
    """DAPO overlong shaping: linear penalty over the last N tokens before the max length (0 = off)."""
    overlong_penalty: float = 1.0
    """Penalty at the max length (the factor of DAPO's overlong reward shaping)."""
    overlong_filter: bool = False
    """Mask truncated responses out of the loss (DAPO overlong filtering)."""
    ppo_epochs: int = 1
    """Passes over each rollout batch (reference: 1)."""
    mini_batch_prompts: int = 64
    """Prompts per optimizer step (reference: 64 = whole batch, one step per rollout)."""
    micro_batch_tokens: int = 32768
    """Token budget (padded slots) of one micro-batch per GPU (reference: 32768)."""
    routing_replay: bool = False
    """MoE: the engines record which experts each token was routed to, and every trainer forward pass
    (pi_old and the update) routes the tokens to those experts (``model/routing.py``)."""

    def validate(self) -> None:
        _check_clip(self)
        if self.loss_agg_mode not in LOSS_AGG_MODES:
            raise ConfigError(f"loss_agg_mode: '{self.loss_agg_mode}' is not one of {list(LOSS_AGG_MODES)}")
        _check_positive(self)


def _check_clip(cfg: AlgoConfig) -> None:
    if not 0 < cfg.clip_ratio_low < 1:
        raise ConfigError(f"clip_ratio_low: must be in (0, 1), got {cfg.clip_ratio_low}")
    if cfg.clip_ratio_high <= 0:
        raise ConfigError(f"clip_ratio_high: must be > 0, got {cfg.clip_ratio_high}")
    if cfg.dual_clip is not None and cfg.dual_clip <= 1:
        raise ConfigError(f"dual_clip: must be > 1, got {cfg.dual_clip}")


def _check_positive(cfg: AlgoConfig) -> None:
    strictly_positive = ("adv_eps", "rollout_is_threshold", "ppo_epochs", "mini_batch_prompts",
                         "micro_batch_tokens", "dynamic_sampling_max_tries")
    for key in strictly_positive:
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{key}: must be > 0, got {getattr(cfg, key)}")
    for key in ("entropy_coef", "kl_coef", "overlong_buffer", "overlong_penalty"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{key}: must be >= 0, got {getattr(cfg, key)}")
