"""data_source registry: math by default for math sources, clear errors, one-function plug-in."""

import pytest

from megatron_grpo.reward import (
    UnknownDataSource,
    get_reward,
    math_reward,
    register_reward,
    registered_sources,
)


@pytest.mark.parametrize("source", ["math", "math_dapo", "DAPO", "aime24", "aime25", "amc_aimo_val83"])
def test_math_sources_use_the_math_reward(source):
    assert get_reward(source) is math_reward


def test_unknown_source_lists_the_registered_ones():
    with pytest.raises(UnknownDataSource) as info:
        get_reward("gsm8k_typo")
    message = str(info.value)
    assert "gsm8k_typo" in message and "math_dapo" in message and "aime24" in message


def test_a_task_plugs_in_with_one_function():
    @register_reward("test_exact_match")
    def exact(response, ground_truth, **options):
        return float(response.strip() == ground_truth)

    assert get_reward("test_exact_match")("yes ", "yes") == 1.0
    assert "test_exact_match" in registered_sources()


def test_a_name_cannot_be_taken_twice():
    with pytest.raises(ValueError, match="already has reward"):
        register_reward("math")(lambda response, ground_truth, **options: 0.0)
    assert get_reward("math") is math_reward
