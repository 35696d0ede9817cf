"""Rule-based rewards: math answer extraction, normalization and equivalence, behind a data_source registry.

``extract_answer`` and ``normalize_answer`` also serve evaluation (maj@k voting keys).
"""

from megatron_grpo.reward.equivalence import answers_match
from megatron_grpo.reward.extract import extract_answer
from megatron_grpo.reward.math_reward import math_reward
from megatron_grpo.reward.normalize import normalize_answer
from megatron_grpo.reward.registry import UnknownDataSource, get_reward, register_reward, registered_sources

__all__ = [
    "UnknownDataSource", "answers_match", "extract_answer", "get_reward", "math_reward", "normalize_answer",
    "register_reward", "registered_sources",
]
