"""Evaluation metrics over n graded samples per problem: mean@n, pass@k, maj@k; per set and overall.

All three are exact expectations over a uniformly random k-subset of the n samples, so they match a
brute-force enumeration of all k-subsets (tests/eval/test_metrics.py does that):

- mean@n: the fraction of correct samples (the expectation of accuracy for any k).
- pass@k: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021, the unbiased estimator), computed as a product.
- maj@k: the majority-vote answer of the k samples is correct. Samples vote with their normalized
  extracted answer; samples without an answer do not vote, and a subset without any vote scores 0.
  Ties split the credit evenly over the tied answers (the expectation of a uniform random tie-break),
  so the result does not depend on sample order. An answer counts as correct with the fraction of its
  samples the grader accepted (0 or 1 unless the grader disagrees with the answer normalizer).

Overall numbers come two ways: ``overall`` is the micro mean over all problems of all sets (big sets
weigh more); ``macro`` is the mean of the per-set values (each set weighs the same).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from math import comb, prod


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k samples drawn without replacement from n, c of them correct, is correct)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1..n} (1 - k/i): no huge binomials, no cancellation
    return 1.0 - prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _ways_others(sizes: list[int], pool: int, m: int, cap: int) -> dict[int, int]:
    """Ways to draw ``m`` items from answer groups of ``sizes`` plus ``pool`` non-voting samples with every
    group drawing at most ``cap``, keyed by how many groups draw exactly ``cap`` (ties)."""
    ways: dict[tuple[int, int], int] = {(0, 0): 1}   # (drawn, ties) -> count
    for size in sizes:
        nxt: dict[tuple[int, int], int] = {}
        for (drawn, ties), w in ways.items():
            for x in range(min(size, cap, m - drawn) + 1):
                key = (drawn + x, ties + (x == cap))
                nxt[key] = nxt.get(key, 0) + w * comb(size, x)
        ways = nxt
    out: dict[int, int] = {}
    for (drawn, ties), w in ways.items():
        out[ties] = out.get(ties, 0) + w * comb(pool, m - drawn)
    return out


def maj_at_k(answers: Sequence[Hashable | None], correct: Sequence[bool], k: int) -> float:
    """Expected majority-vote accuracy of a random k-subset (ties split, ``None`` answers do not vote)."""
    n = len(answers)
    if len(correct) != n or not 1 <= k <= n:
        raise ValueError(f"maj@k needs len(correct) == n and 1 <= k <= n, got n={n} k={k}")
    groups: dict[Hashable, list[bool]] = {}
    for a, ok in zip(answers, correct, strict=True):
        if a is not None:
            groups.setdefault(a, []).append(bool(ok))
    pool = n - sum(len(g) for g in groups.values())
    total = Fraction(0)
    for answer, oks in groups.items():
        if not any(oks):
            continue
        others = [len(g) for a, g in groups.items() if a != answer]
        credit = Fraction(0)
        for t in range(1, min(len(oks), k) + 1):   # t = votes this answer gets in the subset
            ties = _ways_others(others, pool, k - t, t)
            credit += comb(len(oks), t) * sum(Fraction(w, 1 + tie) for tie, w in ties.items())
        total += credit * Fraction(sum(oks), len(oks))
    return float(total / comb(n, k))


@dataclass(frozen=True)
class ProblemOutcome:
    """The graded samples of one problem."""

    set_name: str
    index: str                      # PromptRecord.index of the problem
    correct: list[bool]             # [n] grader verdict per sample
    answers: list[str | None]       # [n] normalized extracted answer per sample (None: no answer)


def report_ks(k: int) -> list[int]:
    """k values reported for pass@k / maj@k: 1, 2, 4, ... below k, and k."""
    ks = [1 << i for i in range(k.bit_length()) if 1 << i < k]
    return ks + [k]


def problem_metrics(o: ProblemOutcome, ks: list[int]) -> dict[str, float]:
    n = len(o.correct)
    out = {f"mean@{n}": sum(o.correct) / n}
    out.update({f"pass@{k}": pass_at_k(n, sum(o.correct), k) for k in ks})
    out.update({f"maj@{k}": maj_at_k(o.answers, o.correct, k) for k in ks})
    return out


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}


@dataclass(frozen=True)
class EvalMetrics:
    """Metrics per set and overall; every dict maps metric name ("mean@16", "pass@4", ...) to a value."""

    n: int                                  # samples per problem
    problems: dict[str, int]                # set -> problems evaluated
    per_set: dict[str, dict[str, float]]    # set -> metric -> mean over that set's problems
    overall: dict[str, float]               # micro: mean over all problems of all sets
    macro: dict[str, float]                 # macro: mean over sets of the per-set values

    def flat(self, prefix: str = "eval") -> dict[str, float]:
        """``{"eval/aime24/mean@16": ..., "eval/overall/...", "eval/macro/..."}`` for the metric logger."""
        tables = {**self.per_set, "overall": self.overall, "macro": self.macro}
        return {f"{prefix}/{name}/{key}": v for name, row in tables.items() for key, v in row.items()}


def summarize(outcomes: list[ProblemOutcome], k: int) -> EvalMetrics:
    """Per-set, micro-overall and macro-overall metrics of graded problems (all with the same n >= k)."""
    if not outcomes:
        raise ValueError("no problems to summarize")
    ns = {len(o.correct) for o in outcomes}
    if len(ns) != 1 or min(ns) < k:
        raise ValueError(f"every problem needs the same number of samples n >= k={k}, got n in {sorted(ns)}")
    ks = report_ks(k)
    rows: dict[str, list[dict[str, float]]] = {}
    for o in outcomes:
        rows.setdefault(o.set_name, []).append(problem_metrics(o, ks))
    per_set = {name: _mean(r) for name, r in rows.items()}
    return EvalMetrics(
        n=ns.pop(), problems={name: len(r) for name, r in rows.items()}, per_set=per_set,
        overall=_mean([r for rs in rows.values() for r in rs]), macro=_mean(list(per_set.values())),
    )
