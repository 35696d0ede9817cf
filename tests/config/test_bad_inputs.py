"""The bad-input sweep over the config: every field with a value of the wrong type, every number out of range
(negative, NaN, infinite) and the contradictory combinations fail at load with the key named, before
Megatron-Core, vLLM or transformers is imported and before any process starts. Fields are walked from the
dataclasses, so a field added later is swept too."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import types
import typing
from typing import Literal, Union, get_args, get_origin

import pytest

from megatron_grpo.config import Config, ConfigError, load_config

# numbers whose negative values mean something: a penalty for a wrong answer, a reward weight, vLLM's
# "no top-k" (-1)
NEGATIVE_ALLOWED = {"reward.incorrect_score", "algo.outcome_weight", "rollout.train.top_k", "rollout.val.top_k"}


def leaves(cls: type = Config, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, annotation) of every field that is not a section."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += leaves(tp, f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", tp))
    return out


def _base(tp):
    """``X`` of ``X | None``."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def wrong_value(tp) -> str:
    """A YAML value of another type than ``tp`` accepts."""
    tp = _base(tp)
    if get_origin(tp) is Literal:
        return "not_one_of_them"
    if get_origin(tp) in (list, tuple, dict) or dataclasses.is_dataclass(tp):
        return "7"
    return {bool: "[1]", int: "abc", float: "abc", str: "[1, 2]"}[tp]


FIELDS = leaves()
NUMBERS = [key for key, tp in FIELDS if _base(tp) in (int, float)]
FLOATS = [key for key, tp in FIELDS if _base(tp) is float]


def _error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    return str(err.value)


def test_the_sweep_walks_every_section():
    sections = {key.split(".")[0] for key, _ in FIELDS}
    assert sections == {f.name for f in dataclasses.fields(Config)} and len(FIELDS) > 100


@pytest.mark.parametrize("key, tp", FIELDS, ids=[key for key, _ in FIELDS])
def test_every_field_refuses_a_value_of_the_wrong_type(key, tp):
    assert f"{key}: " in _error([f"{key}={wrong_value(tp)}"])


@pytest.mark.parametrize("key", [k for k in NUMBERS if k not in NEGATIVE_ALLOWED])
def test_every_number_refuses_a_negative_value(key):
    assert key.rsplit(".", 1)[-1] in _error([f"{key}=-1"])


@pytest.mark.parametrize("key", FLOATS)
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_every_float_refuses_nan_and_infinity(key, value):
    assert f"{key}: expected a finite number" in _error([f"{key}={value}"])


@pytest.mark.parametrize("overrides, message", [
    (["rollout.val.n=4", "eval.k=8"], "eval.k: 8 exceeds the samples drawn per problem, rollout.val.n = 4"),
    (["eval.sets=[]"], "trainer.test_freq: 50 asks for validation, but eval.sets is empty"),
    (["eval.sets=[]", "trainer.test_freq=0", "trainer.val_before_train=true"],
     "trainer.val_before_train: true asks for validation, but eval.sets is empty"),
    (["optim.min_lr=0.01"], "optim.min_lr: must be in [0, lr = 0.001], got 0.01"),
    (["optim.adam_eps=0"], "optim.adam_eps: must be > 0"),
    (["data.seed=-3"], "data.seed: must be >= 0, got -3"),
    (["eval.sets=[{name: a, path: x.jsonl}, {name: a, path: y.jsonl}]"], "eval.sets: duplicate set names ['a']"),
])
def test_contradictions_name_their_keys(overrides, message):
    """Beside tests/config/test_config.py's cases (temperature 0, mini-batch, sequence parallel, ...)."""
    assert message in _error(overrides)


def test_wandb_without_the_package_fails_at_load(monkeypatch):
    real = __import__("importlib.util").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert "logging.wandb: true, but the wandb package is not installed" in _error(["logging.wandb=true"])


SWEEP = """
import json, sys
import psutil
from megatron_grpo.config import ConfigError, load_config
failed = 0
for overrides in json.load(sys.stdin):
    try:
        load_config(None, overrides)
    except ConfigError:
        failed += 1
heavy = [m for m in ("megatron", "vllm", "transformers") if m in sys.modules]
print(json.dumps({"failed": failed, "heavy": heavy, "children": len(psutil.Process().children(recursive=True))}))
"""


def test_the_sweep_fails_before_heavy_imports_or_processes():
    """The whole sweep in a fresh interpreter: every case fails, and nothing heavy was imported or started
    (torch is: the registered losses are torch functions)."""
    cases = [[f"{key}={wrong_value(tp)}"] for key, tp in FIELDS] + [[f"{key}=.nan"] for key in FLOATS]
    proc = subprocess.run([sys.executable, "-c", SWEEP], input=json.dumps(cases), capture_output=True, text=True,
                          timeout=300, check=True)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"failed": len(cases), "heavy": [], "children": 0}
