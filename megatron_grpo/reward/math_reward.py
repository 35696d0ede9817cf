"""The rule-based math reward: extract the final answer, compare it with the ground truth.

Matches the reference run's reward (thunlp/OPD ttrl_math): 1.0 for a correct final answer, 0.0 for a wrong or
missing one, no format reward. Differences, all deliberate: the DAPO ``Answer:`` line is accepted as well as
``\\boxed{}``; only the response tail is searched; equivalence is our own normalizer + exact numbers + sympy
instead of three graders OR-ed together (see docs/reward.md for the measured agreement).
"""

from __future__ import annotations

from megatron_grpo.reward.equivalence import answers_match
from megatron_grpo.reward.extract import DEFAULT_TAIL_CHARS, Fallback, Mode, extract_answer
from megatron_grpo.reward.registry import register_reward

MATH_SOURCES = (
    "math", "math_dapo", "math_dapo_reasoning", "DAPO", "dapo-math", "lighteval/MATH",
    "aime24", "aime25", "amc23", "amc_aimo_val83",
)


@register_reward(*MATH_SOURCES)
def math_reward(
    response: str,
    ground_truth: str,
    *,
    correct_score: float = 1.0,
    incorrect_score: float = 0.0,
    mode: Mode = "strict",
    fallback: Fallback = "none",
    tail_chars: int = DEFAULT_TAIL_CHARS,
) -> float:
    """``correct_score`` if the answer in ``response`` equals ``ground_truth``, else ``incorrect_score``.

    ``mode`` says where the answer may be (``extract.extract_answer``): ``strict`` for training, ``lenient``
    for evaluation. Runs in-process without a time limit; use ``RewardScorer`` (or ``score_batch``) for
    untrusted batches.

    >>> math_reward("... so the answer is \\\\boxed{\\\\frac{1}{2}}.", "0.5")
    1.0
    >>> math_reward("Answer: 025", "25")
    1.0
    >>> math_reward("7", "7"), math_reward("7", "7", fallback="last_number")
    (0.0, 1.0)
    >>> math_reward("The answer is $7$.", "7"), math_reward("The answer is $7$.", "7", mode="lenient")
    (0.0, 1.0)
    """
    answer = extract_answer(response, mode=mode, fallback=fallback, tail_chars=tail_chars)
    if answer is None:
        return incorrect_score
    truth = extract_answer(ground_truth, mode="lenient") if _is_solution(ground_truth) else ground_truth
    return correct_score if truth is not None and answers_match(answer, truth) else incorrect_score


def _is_solution(ground_truth: str) -> bool:
    """A ground truth that is a worked solution (MATH stores those) rather than a bare answer."""
    return "\\boxed" in ground_truth or "\n" in ground_truth.strip() or len(ground_truth) > 200
