"""A user's reward function, given by file path: ``reward.function: path/to/file.py:name``.

The signature is verl's ``custom_reward_function``, so a verl user's function works unchanged::

    def name(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None)
        -> float | dict

A dict must hold ``"score"``; its other keys (numbers) are logged as ``reward/extra/<key>`` (their batch mean).
The function replaces the built-in reward for training rollouts; validation and ``megatron-grpo eval`` keep
grading with the math checker, since their mean@k is a correctness figure.

It runs in the reward workers, under the same time limit and kill protection as the math reward: a call
that hangs is killed at ``reward.timeout_s``, a worker it crashes is replaced. The file is imported once in
the trainer first, so a file that does not import, or lacks the function, stops the run before any model is
built, with the file and function in the message. What a failing *call* does is ``reward.on_error``.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from megatron_grpo.config.reward import split_function


class RewardFunctionError(RuntimeError):
    """The user's reward function cannot be loaded, or (``reward.on_error: abort``) a call of it failed."""


@dataclass(frozen=True)
class UserFunction:
    path: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.path}:{self.name}"

    @staticmethod
    def parse(spec: str) -> UserFunction:
        return UserFunction(*split_function(spec))


_LOADED: dict[tuple[str, str], Callable] = {}


def load(fn: UserFunction) -> Callable:
    """Import the file (once per process) and return the function; every failure names file and function."""
    key = (fn.path, fn.name)
    if key in _LOADED:
        return _LOADED[key]
    path = Path(fn.path)
    if not path.is_file():
        raise RewardFunctionError(f"reward function {fn.label}: no such file")
    module_name = f"megatron_grpo_user_reward_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # SyntaxError, ImportError, a SystemExit at its top level...
        raise RewardFunctionError(f"reward function {fn.label}: importing the file failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
    sys.modules[module_name] = module
    func = getattr(module, fn.name, None)
    if not callable(func):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise RewardFunctionError(f"reward function {fn.label}: the file defines no function '{fn.name}' "
                                  f"(callables in it: {found})")
    try:
        inspect.signature(func).bind("math", "", "", None)
    except (TypeError, ValueError) as exc:
        raise RewardFunctionError(f"reward function {fn.label}: it must accept (data_source, solution_str, "
                                  f"ground_truth, extra_info), as verl's: {exc}") from exc
    _LOADED[key] = func
    return func


def call(path: str, name: str, data_source: str, solution_str: str, ground_truth: str,
         extra_info: dict | None = None) -> float | dict[str, float]:
    """What a reward worker runs: the user's function, its result checked (a float, or a dict of them)."""
    result = load(UserFunction(path, name))(data_source, solution_str, ground_truth, extra_info)
    return check_result(result)


def check_result(result: object) -> float | dict[str, float]:
    if isinstance(result, dict):
        if "score" not in result:
            raise TypeError(f"returned a dict without 'score' (keys: {sorted(result)})")
        bad = [k for k, v in result.items() if not _is_number(v)]
        if bad:
            raise TypeError(f"returned a dict whose values must be numbers; not numbers: {bad}")
        return {str(k): float(v) for k, v in result.items()}
    if not _is_number(result):
        raise TypeError(f"returned {type(result).__name__} {str(result)[:60]!r}, expected a number or a dict "
                        "with a 'score'")
    return float(result)


def _is_number(value: object) -> bool:
    if isinstance(value, (int, float)):
        return math.isfinite(float(value))  # NaN would poison the group's advantages
    try:  # numpy / torch scalars
        return hasattr(value, "item") and isinstance(value.item(), (int, float)) and math.isfinite(value.item())
    except (TypeError, ValueError, RuntimeError):
        return False
