"""Misbehaving reward functions for the pool tests; module-level so worker processes can import them."""

import os
import time

from megatron_grpo.reward import register_reward


@register_reward("test_hang")
def hang(response: str, ground_truth: str, **options: object) -> float:
    if response == "hang":
        time.sleep(3600)
    return 1.0


@register_reward("test_crash")
def crash(response: str, ground_truth: str, **options: object) -> float:
    if response == "crash":
        os._exit(3)
    return 1.0


@register_reward("test_raise")
def fail(response: str, ground_truth: str, **options: object) -> float:
    raise RuntimeError("buggy reward")
