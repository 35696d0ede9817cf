"""The math grader against math-verify on the independent labelled benchmark (bench/reward_cases/), in one run.

    .venv/bin/python bench/reward.py [--dapo DIR] [--repeat N]

The cases were labelled by hand, not by either grader (bench/reward_cases/README.md says how and where
each comes from). For both graders this prints, as JSON lines:

- accuracy on all cases and on the uncontested ones, false positives and false negatives per category;
- wall time over the whole set: ours through a one-worker ``RewardScorer`` (the trainer's pool, started
  beforehand as in training) in lenient mode, against math-verify's ``parse`` + ``verify`` in this process
  with its 1 s timeouts (the adversarial cases included), and the ratio. Each grader first grades the unit
  tests' table (tests/reward/grading_cases.py, other strings), untimed, as a training run's grader has graded
  earlier steps: both parse LaTeX with ANTLR, whose prediction cache is cold in a fresh process;
- the slowest case of each, and how many of ours hit the pool's time limit;
- strict mode's figures, for reference (it also marks unboxed correct answers wrong, by design);
- the DAPO-Math-17k self-grading check: every ground truth boxed and on an ``Answer:`` line must grade
  correct against itself and wrong against the next row's different answer (``--dapo``: the directory
  with the parquet files; skipped when absent).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "reward"))
from grading_cases import ALL_CASES  # noqa: E402

CASES = ROOT / "bench" / "reward_cases"
DAPO = ROOT.parent / "shared" / "data" / "train"
DAPO_FILES = ("dapo_math_17k.parquet", "dapo_math_17k_processed_dedup17398.parquet")
FIELDS = {"id": str, "response": str, "ground_truth": str, "label": int, "category": str, "contested": bool,
          "reason": str, "source": dict}
OPTIONAL = {"source_label", "origin"}
CATEGORIES = (
    "integer", "fraction_decimal", "radical_pi_expression", "expression", "equation", "unmarked_answer",
    "units_text", "multiple_boxes", "tuple_set", "interval_inequality", "latex_shorthand", "matrix_vector",
    "text_choice", "known_bug", "adversarial", "long_response",
)
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Case:
    id: str
    response: str
    ground_truth: str
    label: int
    category: str
    contested: bool
    reason: str
    source: dict


def load_cases(directory: Path = CASES) -> list[Case]:
    """Every case of ``directory/*.jsonl``; a malformed one fails naming its file, line and field."""
    cases: list[Case] = []
    for path in sorted(directory.glob("*.jsonl")):
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                cases.append(_case(json.loads(line), f"{path.name}:{number}"))
    ids = Counter(case.id for case in cases)
    if duplicated := [i for i, n in ids.items() if n > 1]:
        raise ValueError(f"{directory}: duplicate case ids {duplicated[:5]}")
    return cases


def _case(row: dict, where: str) -> Case:
    if unknown := row.keys() - FIELDS.keys() - OPTIONAL:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
    for name, kind in FIELDS.items():
        if not isinstance(row.get(name), kind):
            raise ValueError(f"{where}: field {name!r} must be a {kind.__name__}, got {row.get(name)!r:.80}")
    if row["label"] not in (0, 1) or row["category"] not in CATEGORIES:
        raise ValueError(f"{where}: label must be 0 or 1 and category one of {CATEGORIES}")
    if row["contested"] and not row["reason"].strip():
        raise ValueError(f"{where}: a contested case needs its reason")
    if not {"repo", "path"} <= row["source"].keys():
        raise ValueError(f"{where}: source needs repo and path")
    return Case(**{name: row[name] for name in FIELDS})


def self_grade_failures(truths: list[str], grade: Callable[[str, str], float]) -> list[tuple[int, str, str]]:
    """(row, response, ground truth) where a DAPO ground truth, boxed or on an ``Answer:`` line, is not
    graded correct against itself, or graded correct against the next row's different (integer) answer."""
    failures = []
    for i, truth in enumerate(truths):
        other = truths[(i + 1) % len(truths)]
        for response in (f"... so the answer is $\\boxed{{{truth}}}$.", f"... so it is {truth}.\n\nAnswer: {truth}"):
            if grade(response, truth) != 1.0:
                failures.append((i, response, truth))
            if int(other) != int(truth) and grade(response, other) != 0.0:
                failures.append((i, response, other))
    return failures


def read_dapo_truths(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return [row["ground_truth"] for row in pq.read_table(path, columns=["reward_model"])["reward_model"].to_pylist()]


def report(name: str, cases: list[Case], scores: list[float], seconds: float) -> dict:
    """Accuracy (all, uncontested), and false positives / negatives per category."""
    right = [float(score) == case.label for case, score in zip(cases, scores, strict=True)]
    uncontested = [ok for ok, case in zip(right, cases, strict=True) if not case.contested]
    errors: dict[str, Counter] = {}
    for ok, case in zip(right, cases, strict=True):
        if not ok:
            errors.setdefault(case.category, Counter())["fp" if case.label == 0 else "fn"] += 1
    return {
        "grader": name, "cases": len(cases), "accuracy": round(sum(right) / len(cases), 4),
        "uncontested_cases": len(uncontested), "accuracy_uncontested": round(sum(uncontested) / len(uncontested), 4),
        "false_positives": sum(c["fp"] for c in errors.values()),
        "false_negatives": sum(c["fn"] for c in errors.values()),
        "errors_by_category": {k: dict(v) for k, v in sorted(errors.items())}, "seconds": round(seconds, 3),
    }


def math_verify_grader() -> Callable[[str, str], float]:
    from math_verify import parse, verify

    def grade(response: str, truth: str) -> float:
        gold = parse(truth if "$" in truth or "\\boxed" in truth else f"${truth}$", parsing_timeout=1)
        return float(verify(gold, parse(response, parsing_timeout=1), timeout_seconds=1))

    return grade


def timed(grade: Callable[[str, str], float], cases: Iterable[Case]) -> tuple[list[float], list[float]]:
    scores, seconds = [], []
    for case in cases:
        start = time.perf_counter()
        scores.append(grade(case.response, case.ground_truth))
        seconds.append(time.perf_counter() - start)
    return scores, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dapo", type=Path, default=DAPO, help="directory of the DAPO-Math-17k parquet files")
    parser.add_argument("--repeat", type=int, default=1, help="grade the set this many times (timing only)")
    parser.add_argument("--misses", action="store_true", help="also print every case a grader got wrong")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # math-verify logs every timeout with the whole input
    from megatron_grpo.reward import RewardScorer, math_reward, symbolic

    cases = load_cases()
    print(json.dumps({"cases": len(cases), "contested": sum(c.contested for c in cases),
                      "label_1": sum(c.label for c in cases),
                      "by_source": dict(Counter(c.source["repo"] for c in cases))}), flush=True)
    responses, truths = [c.response for c in cases], [c.ground_truth for c in cases]

    warm_up = [Case(f"warm-{i}", r, t, int(score), "integer", False, "", {})
               for i, (r, t, score) in enumerate(ALL_CASES)]
    mv_grade = math_verify_grader()
    symbolic.warm_up()  # what our pool's workers do as they start; math-verify uses the same LaTeX parser
    timed(mv_grade, warm_up)
    mv_scores, mv_seconds = timed(mv_grade, cases * args.repeat)
    mv_wall = sum(mv_seconds)
    mv = report("math_verify_0.9.0", cases, mv_scores[:len(cases)], mv_wall)
    mv["slowest_case_s"] = round(max(mv_seconds), 3)

    scorer = RewardScorer(workers=1, timeout_s=TIMEOUT_S, mode="lenient")
    scorer.score([c.response for c in warm_up], [c.ground_truth for c in warm_up])
    start = time.perf_counter()
    for _ in range(args.repeat):
        ours_scores = scorer.score(responses, truths)
    ours_wall = time.perf_counter() - start
    stats = scorer.last_stats
    scorer.close()
    ours = report("ours_lenient_pool1", cases, ours_scores, ours_wall)
    ours |= {"timeouts": stats.timeouts, "crashes": stats.crashes,
             "slowest_case_s": round(max(timed(lambda r, t: math_reward(r, t, mode="lenient"), cases)[1]), 3)}
    ours["speedup_vs_math_verify"] = round(mv_wall / ours_wall, 1)
    strict_scores, strict_seconds = timed(math_reward, cases)
    strict = report("ours_strict_in_process", cases, strict_scores, sum(strict_seconds))
    for row in (mv, ours, strict):
        print(json.dumps(row), flush=True)
    goals = {
        "uncontested_accuracy_at_least_mv_plus_1pt": ours["accuracy_uncontested"] >= mv["accuracy_uncontested"] + 0.01,
        "accuracy_at_least_mv": ours["accuracy"] >= mv["accuracy"],
        "false_positives_at_most_mv": ours["false_positives"] <= mv["false_positives"],
        "at_least_10x_faster": ours["speedup_vs_math_verify"] >= 10,
        "every_case_within_timeout": stats.timeouts == 0 and stats.crashes == 0,
    }
    print(json.dumps({"goals": goals, "all_met": all(goals.values())}), flush=True)
    if args.misses:
        for name, scores in (("math_verify", mv_scores), ("ours", ours_scores)):
            for case, score in zip(cases, scores, strict=False):
                if float(score) != case.label:
                    print(json.dumps({"grader": name, "id": case.id, "label": case.label, "category": case.category,
                                      "contested": case.contested, "response": case.response[-300:],
                                      "ground_truth": case.ground_truth}, ensure_ascii=False))
    for name in DAPO_FILES:
        path = args.dapo / name
        if not path.exists():
            print(json.dumps({"dapo": str(path), "skipped": "absent"}))
            continue
        dapo = read_dapo_truths(path)
        start = time.perf_counter()
        failures = self_grade_failures(dapo, math_reward)
        print(json.dumps({"dapo": name, "ground_truths": len(dapo), "failures": len(failures),
                          "first_failures": failures[:3], "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
