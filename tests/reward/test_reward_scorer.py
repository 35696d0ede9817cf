"""RewardScorer: same scores as in-process grading, per-response time limit, killed workers replaced."""

import time

import pytest
import reward_test_fns  # noqa: F401 - registers test_hang / test_crash / test_raise
from grading_cases import ALL_CASES

from megatron_grpo.config import ConfigError, RewardConfig
from megatron_grpo.config.loader import from_dict
from megatron_grpo.reward import UnknownDataSource, math_reward
from megatron_grpo.reward.scorer import RewardScorer, from_config, score_batch

TIMEOUT_S = 1.0
ADVERSARIAL = [
    ("\\boxed{9^{9^{9^{9}}}}", "1"),
    ("\\boxed{9^9^9^9}", "1"),
    ("\\boxed{10^{10^{10}}}", "1"),
    ("\\boxed{2^{2^{2^{2^{2^{2}}}}}}", "1"),
    ("\\boxed{(10^{7})!}", "1"),
    ("\\boxed{" + "(" * 1000 + "1" + ")" * 1000 + "}", "2"),
    ("\\boxed{" + "\\frac{" * 300 + "1" + "}{2}" * 300 + "}", "1"),
    ("\\boxed{" + "{" * 1500 + "}" * 1500 + "}", "1"),
    ("\\boxed{" + "1+" * 1500 + "1}", "1"),
    ("\\boxed{" + "1" * 4000 + "}", "1"),
    ("\\boxed{" + ",".join(["(1,2)"] * 300) + "}", "(1,2)"),
    ("lorem ipsum " * 90_000 + "\\boxed{12}", "13"),
    ("\\boxed{" * 100_000, "1"),
    ("Answer: " * 100_000, "1"),
    ("\\boxed{\\tan(\\pi/2)}", "1"),
    ("\\boxed{1}, " * 10_000, "2"),  # lenient mode joins at most MAX_JOINED_BOXES boxes
    ("the answer is " * 20_000, "1"),
    ("\\[" * 50_000 + "1\\]", "2"),
    ("$$" * 50_000, "1"),
]


@pytest.fixture(scope="module")
def scorer():
    with RewardScorer(workers=2, timeout_s=TIMEOUT_S) as scorer:
        yield scorer


def test_pool_scores_equal_in_process_scores():
    responses, truths, _ = zip(*ALL_CASES, strict=True)
    # a generous limit: this compares results, and a loaded machine must not turn one into a timeout
    with RewardScorer(workers=2, timeout_s=60.0) as scorer:
        scores = scorer.score(responses, truths)
        assert scores == [math_reward(r, t) for r, t in zip(responses, truths, strict=True)]
        assert scorer.last_stats.responses == len(ALL_CASES)
        assert scorer.metrics()["reward/timeouts"] == 0.0


@pytest.mark.parametrize("mode", ["strict", "lenient"])
@pytest.mark.parametrize(("response", "ground_truth"), ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_input_returns_in_time(scorer, response, ground_truth, mode):
    start = time.monotonic()
    scores = scorer.score([response], [ground_truth], mode=mode)
    assert time.monotonic() - start < TIMEOUT_S + 1.0
    assert scores == [0.0]
    assert scorer.last_stats.crashes == 0 and scorer.last_stats.errors == 0


def test_hung_worker_is_killed_replaced_and_counted(scorer):
    pids = scorer.pool.pids()
    responses = ["hang", "\\boxed{5}", "\\boxed{6}", "ok"]
    start = time.monotonic()
    scores = scorer.score(responses, ["5", "5", "5", "x"], ["test_hang", "math", "math", "test_hang"])
    assert time.monotonic() - start < TIMEOUT_S + 1.0
    assert scores == [0.0, 1.0, 0.0, 1.0]
    assert scorer.metrics()["reward/timeouts"] == 1.0
    assert len(set(scorer.pool.pids()) - set(pids)) == 1
    assert scorer.score(["\\boxed{5}"] * 8, ["5"] * 8) == [1.0] * 8
    assert scorer.pool.size == 2 and scorer.last_stats.timeouts == 0


def test_crashed_worker_is_replaced_and_counted(scorer):
    sources = ["test_crash", "test_crash", "math"]
    scores = scorer.score(["crash", "fine", "\\boxed{3}"], ["", "", "3"], sources)
    assert scores == [0.0, 1.0, 1.0]
    assert scorer.last_stats.crashes == 1
    assert scorer.score(["\\boxed{3}"], ["3"]) == [1.0]


def test_raising_reward_scores_incorrect_and_is_counted(scorer):
    assert scorer.score(["a", "b"], ["a", "b"], "test_raise") == [0.0, 0.0]
    assert scorer.last_stats.errors == 2


def test_unknown_source_and_length_mismatch_fail_before_work(scorer):
    with pytest.raises(UnknownDataSource, match="registered: "):
        scorer.score(["x"], ["x"], "no_such_source")
    with pytest.raises(ValueError, match="lengths differ"):
        scorer.score(["x", "y"], ["x"])


def test_from_config_passes_grading_options():
    cfg = from_dict(RewardConfig, {"fallback": "last_number", "incorrect_score": -1.0, "workers": 1})
    with from_config(cfg) as scorer:
        assert scorer.score(["7", "the answer is 8", "none"], ["7", "7", "7"]) == [1.0, -1.0, -1.0]


def test_the_mode_comes_from_the_config_and_a_call_may_override_it():
    responses, truths = ["The answer is 7.", "\\boxed{7}"], ["7", "7"]
    with from_config(from_dict(RewardConfig, {"workers": 1})) as scorer:  # strict by default
        assert scorer.score(responses, truths) == [0.0, 1.0]
        assert scorer.score(responses, truths, mode="lenient") == [1.0, 1.0]  # validation's call
        assert scorer.score(responses, truths) == [0.0, 1.0]  # for that call only
    with from_config(from_dict(RewardConfig, {"workers": 1, "mode": "lenient"})) as scorer:
        assert scorer.score(responses, truths) == [1.0, 1.0]


def test_score_batch_with_spawn_workers():
    scores = score_batch(["Answer: 025", "\\boxed{26}"], ["25", "25"], workers=1, start_method="spawn")
    assert scores == [1.0, 0.0]


@pytest.mark.parametrize(
    ("data", "message"),
    [({"timeout_s": 0}, "timeout_s"), ({"tail_chars": 0}, "tail_chars"), ({"workers": 0}, "workers"),
     ({"correct_score": 0.0}, "correct_score"), ({"fallback": "first"}, "fallback"),
     ({"timeout": 1}, "timeout_s"), ({"start_method": "fork"}, "start_method")],
)
def test_config_rejects_bad_values(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(RewardConfig, data)


def test_workers_survive_the_stop_signals_sent_to_the_process_group():
    """Pre-emption signals reach every process of the job; the graders must keep working meanwhile."""
    import os
    import signal

    with RewardScorer(workers=1, timeout_s=5.0) as scorer:
        for pid in scorer.pool.pids():
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGUSR1)
        assert scorer.score(["Answer: 4"], ["4"]) == [1.0]
        assert scorer.metrics()["reward/worker_crashes"] == 0.0


def test_an_unguarded_script_gets_told_to_guard_its_call(tmp_path):
    """Grading at a script's top level: the workers import the script and would grade again inside."""
    import subprocess
    import sys

    script = tmp_path / "grade.py"
    script.write_text("from megatron_grpo.reward import score_batch\n"
                      "print(score_batch(['\\\\boxed{2}'], ['2'], workers=1))\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0
    assert f"Reward workers import {script} as they start" in proc.stderr, proc.stderr[-2000:]
    assert 'put that under `if __name__ == "__main__":`' in proc.stderr


PATHOLOGICAL = {  # each once made a regex backtrack exponentially or could: all must finish unkilled
    "commands": "\\ab" * 3000, "subscripts": "a_{b}" * 2000, "letters": "x" * 4000, "inequalities": "x<" * 2000,
    "dollars": "$a$ " * 1000, "is": "is 5 " * 800, "equals": "a=" * 2000, "words": "5 " + "ab " * 1000,
    "pm": "\\pm" * 1000, "ors": "1 or " * 800, "cells": "\\begin{pmatrix}" + "1&" * 2000 + "\\end{pmatrix}",
    "negations": "-x>" * 1000, "underscores": "_" * 4000,
}


@pytest.mark.parametrize("text", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_pathological_answers_are_graded_without_the_time_limit(scorer, text):
    responses = [f"\\boxed{{{text}}}", text, f"Answer: {text}"]
    scorer.score(responses, [text[:50]] * 3, mode="lenient")
    assert scorer.last_stats.timeouts == 0 and scorer.last_stats.crashes == 0 and scorer.last_stats.errors == 0
