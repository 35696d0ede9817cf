"""Rule-based rewards: math answer extraction, normalization and equivalence, behind a data_source registry.

``extract_answer`` and ``normalize_answer`` also serve evaluation (maj@k voting keys). The trainer keeps one
``RewardScorer`` (``from_config(cfg.reward)``) for the run; ``score_batch`` is the one-shot form.
"""

from megatron_grpo.reward.equivalence import answers_match
from megatron_grpo.reward.extract import extract_answer
from megatron_grpo.reward.math_reward import math_reward
from megatron_grpo.reward.normalize import normalize_answer
from megatron_grpo.reward.registry import UnknownDataSource, get_reward, register_reward, registered_sources
from megatron_grpo.reward.scorer import RewardScorer, ScoreStats, from_config, score_batch

__all__ = [
    "RewardScorer", "ScoreStats", "UnknownDataSource", "answers_match", "extract_answer", "from_config",
    "get_reward", "math_reward", "normalize_answer", "register_reward", "registered_sources", "score_batch",
]
