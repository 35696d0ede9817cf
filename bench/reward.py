"""Reward grading throughput and accuracy, side by side with math-verify, on the same responses.

    .venv/bin/python bench/reward.py [--repeat 1]

Builds a labelled mixed set from the eval answers (shared/data/eval): correct answers in both formats,
reformatted correct answers (leading zeros, ``.0``, degrees, ``\\frac{2n}{2}``, ``\\sqrt{n^2}``, words),
wrong answers, missing answers and a few adversarial responses, each after ~1 KB of "reasoning".
Grades it with our reward in-process and through ``RewardScorer`` with 1 and 2 workers, and with
math-verify's ``parse`` + ``verify`` (its timeouts lowered to 1 s so adversarial items stay bounded).
Also scores the labelled unit-test table (tests/reward/grading_cases.py) with both graders.
Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

from math_verify import parse, verify

from megatron_grpo.reward import RewardScorer, math_reward

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT.parent / "shared" / "data" / "eval"
EVAL_FILES = ["aime24.jsonl", "aime25.jsonl", "amc23.jsonl", "extra/amc_aimo_val83.jsonl"]
sys.path.insert(0, str(ROOT / "tests" / "reward"))
from grading_cases import ALL_CASES  # noqa: E402

Case = tuple[str, str, float]
ADVERSARIAL = [
    "\\boxed{9^{9^{9^{9}}}}", "\\boxed{" + "(" * 500 + "1" + ")" * 500 + "}", "\\boxed{(10^{7})!}",
    "\\boxed{" * 20_000, "Answer: " * 20_000, "lorem ipsum " * 80_000 + "\\boxed{-1}",
]


def _answers() -> list[str]:
    answers = []
    for name in EVAL_FILES:
        with open(EVAL / name) as f:
            answers += [json.loads(line)["answer"] for line in f if line.strip()]
    return answers


def _variants(gt: str) -> list[Case]:
    n = int(gt)
    return [
        (f"\\boxed{{{gt}}}", gt, 1.0),
        (f"Answer: {gt}", gt, 1.0),
        (f"$\\boxed{{0{gt}}}$.", gt, 1.0),
        (f"\\boxed{{{gt}.0}}", gt, 1.0),
        (f"Answer: ${gt}^\\circ$", gt, 1.0),
        (f"\\boxed{{\\frac{{{2 * n}}}{{2}}}}", gt, 1.0),
        (f"\\boxed{{\\sqrt{{{n * n}}}}}", gt, 1.0) if n >= 0 else (f"\\boxed{{-\\sqrt{{{n * n}}}}}", gt, 1.0),
        (f"\\boxed{{{n + 1}}}", gt, 0.0),
        (f"Answer: {n * 10 + 3}", gt, 0.0),
        (f"\\boxed{{{gt}x}}", gt, 0.0),
        (f"The answer is {gt}.", gt, 0.0),
    ]


def build_mixed_set(seed: int = 0) -> list[Case]:
    rng = random.Random(seed)
    words = "we compute the sum of the terms and simplify using the identity so that".split()
    cases = [case for gt in _answers() for case in _variants(gt)]
    cases += [(response, "1", 0.0) for response in ADVERSARIAL]
    rng.shuffle(cases)
    return [(" ".join(rng.choices(words, k=180)) + "\n\n" + r, gt, label) for r, gt, label in cases]


def math_verify_grade(response: str, gt: str) -> float:
    gold = parse(f"${gt}$", parsing_timeout=1)
    return float(verify(gold, parse(response, parsing_timeout=1), timeout_seconds=1))


def _measure(name: str, grade: Callable[[list[str], list[str]], list[float]], cases: list[Case], workers: int):
    responses, truths, labels = (list(x) for x in zip(*cases, strict=True))
    start = time.perf_counter()
    scores = grade(responses, truths)
    seconds = time.perf_counter() - start
    accuracy = sum(s == label for s, label in zip(scores, labels, strict=True)) / len(cases)
    return scores, {"grader": name, "workers": workers, "responses": len(cases), "seconds": round(seconds, 3),
                    "per_s": round(len(cases) / seconds, 1), "accuracy_vs_labels": round(accuracy, 4)}


def _in_process(fn: Callable[[str, str], float]) -> Callable[[list[str], list[str]], list[float]]:
    return lambda responses, truths: [fn(r, t) for r, t in zip(responses, truths, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="repeat the mixed set to grade more responses")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # math-verify logs every timeout with the whole input
    mixed = build_mixed_set() * args.repeat
    reference, ref_row = _measure("math_verify", _in_process(math_verify_grade), mixed, 1)
    print(json.dumps(ref_row), flush=True)
    scorers = [RewardScorer(workers=w) for w in (1, 2)]
    runs = [("ours_in_process", _in_process(math_reward), 1)]
    runs += [("ours_pool", scorer.score, scorer.pool.size) for scorer in scorers]
    for name, grade, workers in runs:
        scores, row = _measure(name, grade, mixed, workers)
        agreement = sum(a == b for a, b in zip(scores, reference, strict=True)) / len(mixed)
        row |= {"agreement_with_math_verify": round(agreement, 4),
                "speedup_vs_math_verify": round(row["per_s"] / ref_row["per_s"], 1)}
        print(json.dumps(row), flush=True)
    for scorer in scorers:
        scorer.close()
    for name, grade in [("math_verify", math_verify_grade), ("ours_in_process", math_reward)]:
        _, row = _measure(name, _in_process(grade), list(ALL_CASES), 1)
        print(json.dumps(row | {"set": "tests/reward/grading_cases.py"}), flush=True)


if __name__ == "__main__":
    main()
