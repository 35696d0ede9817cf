"""A user's reward function given by file path (``reward.function``), with verl's signature: what it returns
is scored and logged; one that hangs, crashes, raises, returns the wrong type or does not import gets an
error naming the file and function, and ``reward.on_error`` decides whether the run goes on."""

from __future__ import annotations

import logging
import re
import textwrap

import pytest

from megatron_grpo.config import ConfigError, load_config
from megatron_grpo.reward.scorer import RewardScorer
from megatron_grpo.reward.user import RewardFunctionError, UserFunction, check_result

USER_FILE = '''
import os, time

def score(data_source, solution_str, ground_truth, extra_info=None):
    """verl's custom_reward_function signature."""
    if solution_str == "hang":
        time.sleep(60)
    if solution_str == "crash":
        os._exit(3)
    if solution_str == "raise":
        raise ValueError("no answer in " + solution_str)
    if solution_str == "text":
        return "yes"
    if solution_str == "dict":
        return {"score": 0.5, "format_ok": 1, "length": len(solution_str)}
    return float(solution_str == ground_truth) + (0.25 if data_source == "bonus" else 0.0)
'''


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "my_reward.py"
    path.write_text(USER_FILE)
    return path


@pytest.fixture(scope="module")
def scorer(user_file):
    with RewardScorer(workers=2, timeout_s=1.0, function=f"{user_file}:score", incorrect_score=-1.0) as scorer:
        yield scorer


def test_scores_data_sources_and_extra_metrics(scorer):
    scores = scorer.score(["7", "8", "7", "dict"], ["7", "7", "7", "7"], ["math", "math", "bonus", "math"])
    assert scores == [1.0, 0.0, 1.25, 0.5]
    metrics = scorer.metrics()
    assert metrics["reward/extra/format_ok"] == pytest.approx(1.0)  # mean over the responses that returned it
    assert metrics["reward/extra/length"] == pytest.approx(4.0)
    assert metrics["reward/errors"] == 0.0


def test_the_math_grader_still_grades_validation(scorer):
    """Validation asks for the built-in grader: correctness, not the user's reward."""
    scores = scorer.score(["\\boxed{7}", "\\boxed{8}"], ["7", "7"], "math", use_function=False, mode="lenient")
    assert scores == [1.0, -1.0]


@pytest.mark.parametrize(("response", "kind", "detail"), [
    ("hang", "timeouts", "timed out after 1.0 s"),
    ("crash", "worker_crashes", "crashed its worker"),
    ("raise", "errors", "ValueError: no answer in raise"),
    ("text", "errors", "returned str 'yes', expected a number"),
])
def test_a_failing_call_scores_incorrect_and_is_named(scorer, user_file, caplog, response, kind, detail):
    with caplog.at_level(logging.WARNING, logger="megatron_grpo.reward.scorer"):
        scores = scorer.score([response, "7"], ["7", "7"], "math")
    assert scores == [-1.0, 1.0]  # the failing response scores incorrect_score, the other is graded
    assert scorer.metrics()[f"reward/{kind}"] == 1.0
    assert f"{user_file}:score" in caplog.text and detail in caplog.text and "reward.on_error" in caplog.text


def test_on_error_abort_stops_with_file_and_function(user_file):
    with RewardScorer(workers=1, timeout_s=1.0, function=f"{user_file}:score", on_error="abort") as scorer:
        with pytest.raises(RewardFunctionError, match=r"my_reward.py:score.*ValueError: no answer in raise"):
            scorer.score(["raise"], ["7"], "math")


@pytest.mark.parametrize(("source", "message"), [
    ("def score(:\n", "importing the file failed: SyntaxError"),
    ("import not_a_module_here\n", "importing the file failed: ModuleNotFoundError"),
    ("def other(data_source, solution_str, ground_truth, extra_info=None):\n    return 1.0\n",
     "defines no function 'score' (callables in it: ['other'])"),
    ("def score(response, truth):\n    return 1.0\n", "must accept (data_source, solution_str, ground_truth"),
])
def test_a_file_that_does_not_load_fails_before_any_work(tmp_path, source, message):
    path = tmp_path / "bad_reward.py"
    path.write_text(source)
    with pytest.raises(RewardFunctionError) as err:
        RewardScorer(workers=1, function=f"{path}:score")
    assert f"{path}:score" in str(err.value) and message in str(err.value)


def test_config_resolves_the_path_and_refuses_bad_specs(tmp_path, user_file, monkeypatch):
    config = tmp_path / "run.yaml"
    config.write_text(textwrap.dedent(f"""\
        model: {{hf_config: {load_config().model.hf_config}, tokenizer: {load_config().model.tokenizer}}}
        reward: {{function: ../{user_file.parent.name}/{user_file.name}:score}}
        """))
    (tmp_path.parent / user_file.parent.name).mkdir(exist_ok=True)
    (tmp_path.parent / user_file.parent.name / user_file.name).write_text(USER_FILE)
    monkeypatch.chdir("/")
    assert load_config(config).reward.function.endswith(f"{user_file.parent.name}/{user_file.name}:score")
    with pytest.raises(ConfigError, match="reward.function: 'my_reward.py' is not 'path/to/file.py:function_name'"):
        load_config(None, ["reward.function=my_reward.py"])
    with pytest.raises(ConfigError, match="reward.function: .*nowhere.py: no such file"):
        load_config(None, ["reward.function=/nowhere.py:score"])


def test_results_are_checked():
    assert check_result(True) == 1.0 and check_result(2) == 2.0
    assert check_result({"score": 1, "acc": 1.0}) == {"score": 1.0, "acc": 1.0}
    for bad, message in [(None, "returned NoneType"), (float("nan"), "returned float"),
                         ({"acc": 1.0}, "without 'score'"), ({"score": 1.0, "note": "ok"}, "not numbers: ['note']")]:
        with pytest.raises(TypeError, match=re.escape(message)):
            check_result(bad)
    assert UserFunction.parse("a/b.py:fn").label == "a/b.py:fn"
