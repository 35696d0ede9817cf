"""Rule-based rewards: math answer extraction, normalization and equivalence, behind a data_source registry.

``extract_answer`` and ``normalize_answer`` also serve evaluation (maj@k voting keys).
"""

from megatron_grpo.reward.extract import extract_answer
from megatron_grpo.reward.normalize import normalize_answer

__all__ = ["extract_answer", "normalize_answer"]
