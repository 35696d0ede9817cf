"""GRPO / DAPO / Dr.GRPO / GSPO / CISPO algorithm config (the ``algo`` section); the math lives in
``megatron_grpo.algo``, whose registries (``algo.losses``, ``algo.advantages``) also say what each loss is
defined with: fields left unset here take the chosen loss's values, and explicit contradictions are refused.
Reading the registries is the one import from this package upward; they import nothing of it back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from megatron_grpo.config.loader import ConfigError

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


@dataclass(frozen=True)
class AlgoConfig:
    loss: str = "grpo"
    """Policy loss (``algo/losses.py``): grpo (PPO-clip), drgrpo (Dr.GRPO), gspo (sequence ratio), cispo."""
    advantage: str | None = None
    """grpo: (r - mean) / (std + eps) per group; drgrpo: r - mean (no std); rloo: r - mean of the others.
    Unset: the loss's own (drgrpo for the drgrpo loss), else grpo."""
    adv_eps: float = 1e-6
    """Added to the group std before dividing (grpo only)."""
    outcome_weight: float = 1.0
    """Scale of the outcome advantage (reference: 1.0)."""
    clip_ratio_low: float | None = None
    """The ratio is clipped below at 1 - clip_ratio_low (1: no lower bound). Unset: the loss's default
    (grpo, drgrpo 0.2; gspo 3e-4 on the sequence ratio; cispo 1)."""
    clip_ratio_high: float | None = None
    """The ratio is clipped above at 1 + clip_ratio_high; DAPO's clip-higher uses 0.28. Unset: the loss's
    default (grpo, drgrpo 0.2; gspo 4e-4; cispo 0.28)."""
    dual_clip: float | None = None
    """Dual-clip constant c > 1 bounding the loss at c * |A| for negative advantages (``None`` = off)."""
    loss_agg_mode: str | None = None
    """token-mean (reference), seq-mean-token-sum, seq-mean-token-mean (GSPO), seq-mean-token-sum-norm
    (Dr.GRPO). Unset: the loss's own, else token-mean."""
    entropy_coef: float = 0.0
    """Entropy bonus subtracted from the loss (reference: 0, no bonus)."""
    kl_coef: float = 0.0
    """KL to a frozen reference model; 0 (reference) means no reference model is built."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """k1 = log ratio, k2 = log ratio^2 / 2, k3 = ratio - 1 - log ratio (verl's "low_var_kl")."""
    kl_in: Literal["loss", "reward"] = "loss"
    """loss: add kl_coef * KL to the loss (GRPO); reward: subtract kl_coef * (the response's summed KL)
    from its reward before the advantages (PPO-style penalty)."""
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

    def __post_init__(self) -> None:
        """Unset fields take the loss's values, so the written config says what ran."""
        from megatron_grpo.algo.losses import POLICY_LOSSES

        loss = POLICY_LOSSES.get(self.loss)
        if loss is None:
            return  # validate() names the registered losses
        defaults = {"advantage": loss.advantages[0] if loss.advantages else "grpo",
                    "loss_agg_mode": loss.agg or "token-mean",
                    "clip_ratio_low": loss.clip[0], "clip_ratio_high": loss.clip[1]}
        for key, value in defaults.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)

    def validate(self) -> None:
        _check_loss(self)
        _check_clip(self)
        _check_positive(self)


def _check_loss(cfg: AlgoConfig) -> None:
    from megatron_grpo.algo.advantages import ADVANTAGE_ESTIMATORS
    from megatron_grpo.algo.losses import POLICY_LOSSES

    if cfg.loss not in POLICY_LOSSES:
        raise ConfigError(f"loss: '{cfg.loss}' is not a registered policy loss {sorted(POLICY_LOSSES)}")
    if cfg.advantage not in ADVANTAGE_ESTIMATORS:
        raise ConfigError(f"advantage: '{cfg.advantage}' is not a registered estimator {sorted(ADVANTAGE_ESTIMATORS)}")
    if cfg.loss_agg_mode not in LOSS_AGG_MODES:
        raise ConfigError(f"loss_agg_mode: '{cfg.loss_agg_mode}' is not one of {list(LOSS_AGG_MODES)}")
    loss = POLICY_LOSSES[cfg.loss]
    if loss.agg and cfg.loss_agg_mode != loss.agg:
        raise ConfigError(f"loss_agg_mode: the {cfg.loss} loss is defined with {loss.agg}, got {cfg.loss_agg_mode} "
                          "(leave it unset)")
    if loss.advantages and cfg.advantage not in loss.advantages:
        raise ConfigError(f"advantage: the {cfg.loss} loss is defined with {' or '.join(loss.advantages)}, got "
                          f"{cfg.advantage} (leave it unset)")
    if cfg.dual_clip is not None and not loss.dual_clip:
        raise ConfigError(f"dual_clip: the {cfg.loss} loss has no dual clip; remove it")


def _check_clip(cfg: AlgoConfig) -> None:
    if not 0 < cfg.clip_ratio_low <= 1:
        raise ConfigError(f"clip_ratio_low: must be in (0, 1], got {cfg.clip_ratio_low}")
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
