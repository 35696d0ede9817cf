"""Every ground truth of the eval sets grades correct in both answer formats, and a neighbour does not."""

import json

import pytest

from megatron_grpo.reward import math_reward
from tests.shared_data import DATA as MIRROR
from tests.shared_data import needs_shared

pytestmark = needs_shared
DATA = MIRROR / "eval"
FILES = ["aime24.jsonl", "aime25.jsonl", "amc23.jsonl", "extra/amc_aimo_val83.jsonl"]


def _answers() -> list[tuple[str, str]]:
    rows = []
    for name in FILES:
        with open(DATA / name) as f:
            rows += [(name, json.loads(line)["answer"]) for line in f if line.strip()]
    return rows


ANSWERS = _answers()


def test_all_eval_files_are_read():
    assert len(ANSWERS) == 30 + 30 + 40 + 83


@pytest.mark.parametrize(
    "template", ["Answer: {}", "so we get $\\boxed{{{}}}$.", "Reasoning...\n\nAnswer: {}\n", "\\boxed{{{}}}"]
)
def test_eval_ground_truths_grade_correct(template):
    wrong = [(name, gt) for name, gt in ANSWERS if math_reward(template.format(gt), gt) != 1.0]
    assert wrong == []


def test_eval_ground_truths_reject_a_neighbour():
    wrong = [(name, gt) for name, gt in ANSWERS if math_reward(f"\\boxed{{{int(gt) + 1}}}", gt) != 0.0]
    assert wrong == []
