"""Reward functions keyed by a dataset's ``data_source``.

A task plugs in with one function::

    @register_reward("countdown")
    def countdown_reward(response: str, ground_truth: str, **options) -> float: ...

``options`` are the grading options of ``RewardConfig`` (``correct_score``, ``incorrect_score``, ``fallback``,
``tail_chars``); a function uses those it needs. Functions run in worker processes, so they must be
importable module-level functions (pickled by reference).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class RewardFn(Protocol):
    def __call__(self, response: str, ground_truth: str, **options: object) -> float: ...


class UnknownDataSource(KeyError):
    """No reward function is registered for a ``data_source``; the message lists those that are."""

    def __str__(self) -> str:
        return str(self.args[0])


_REWARDS: dict[str, RewardFn] = {}


def register_reward(*names: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator registering ``fn`` under each ``data_source`` name; a name can be registered only once."""

    def decorate(fn: RewardFn) -> RewardFn:
        for name in names:
            if name in _REWARDS and _REWARDS[name] is not fn:
                raise ValueError(f"data_source {name!r} already has reward {_REWARDS[name].__qualname__}")
            _REWARDS[name] = fn
        return fn

    return decorate


def get_reward(data_source: str) -> RewardFn:
    try:
        return _REWARDS[data_source]
    except KeyError:
        known = ", ".join(sorted(_REWARDS))
        message = f"no reward registered for data_source {data_source!r}; registered: {known}"
        raise UnknownDataSource(message) from None


def registered_sources() -> list[str]:
    return sorted(_REWARDS)
