"""Micro-batch packing benchmark on reference-like GRPO batches (CPU, seconds).

512 sequences (64 prompts x 8), prompt 60-400 tokens, response 200-7168 with a long tail, 8 DP ranks,
32768 padded slots per micro-batch. Compares three ways to cut the batch into padded micro-batches:

* ``naive``: rollout order, contiguous DP shards, each rank filled in order until the budget;
* ``ffd``: tokens balanced over ranks, then first-fit-decreasing within each rank (fewest bins);
* ``sorted_balanced``: ``megatron_grpo.algo.pack_micro_batches`` (the one the trainer uses);
* ``sorted_balanced_thd``: the same with the packed (THD) cost model, for comparison.

Usage: ``python bench/packing.py`` -> one JSON line per case.
"""

from __future__ import annotations

import json
import random
import time

from megatron_grpo.algo import micro_batch_cost, pack_micro_batches, padding_fraction

N_SEQS, DP, BUDGET, MAX_RESPONSE = 512, 8, 32768, 7168


def lengths(dist: str, seed: int) -> list[int]:
    """Prompt + response lengths; ``truncated_frac`` of responses hit the max length."""
    rng = random.Random(seed)
    median, sigma, truncated_frac = {"typical": (1500, 0.8, 0.03), "long": (3000, 0.7, 0.15)}[dist]
    out = []
    for _ in range(N_SEQS):
        resp = MAX_RESPONSE if rng.random() < truncated_frac else rng.lognormvariate(0, sigma) * median
        out.append(rng.randint(60, 400) + int(min(max(resp, 200), MAX_RESPONSE)))
    return out


def fill_in_order(lens: list[int], order: list[int]) -> list[list[int]]:
    mbs, cur = [], []
    for i in order:
        if cur and micro_batch_cost([lens[j] for j in cur + [i]]) > BUDGET:
            mbs.append(cur)
            cur = []
        cur.append(i)
    return mbs + [cur] if cur else mbs


def naive(lens: list[int]) -> list[list[list[int]]]:
    per = len(lens) // DP
    return [fill_in_order(lens, list(range(r * per, (r + 1) * per))) for r in range(DP)]


def ffd(lens: list[int]) -> list[list[list[int]]]:
    ranks, load = [[] for _ in range(DP)], [0] * DP
    for i in sorted(range(len(lens)), key=lambda i: -lens[i]):
        r = load.index(min(load))
        ranks[r].append(i)
        load[r] += lens[i]
    out = []
    for seqs in ranks:
        bins: list[list[int]] = []
        for i in seqs:  # already longest first
            fit = next((b for b in bins if micro_batch_cost([lens[j] for j in b + [i]]) <= BUDGET), None)
            if fit is None:
                bins.append([i])
            else:
                fit.append(i)
        out.append(bins)
    return out


def ours(layout: str):
    return lambda lens: pack_micro_batches(lens, DP, BUDGET, layout).ranks


def report(case: str, lens: list[int], pack, layout: str = "padded") -> dict:
    start = time.perf_counter()
    ranks = pack(lens)
    ms = (time.perf_counter() - start) * 1e3
    costs = [sum(micro_batch_cost([lens[i] for i in mb], layout) for mb in r) for r in ranks]
    assert sorted(i for r in ranks for mb in r for i in mb) == list(range(len(lens)))
    assert all(micro_batch_cost([lens[i] for i in mb], layout) <= BUDGET for r in ranks for mb in r)
    return {
        "case": case,
        "padding_fraction": round(padding_fraction(lens, [mb for r in ranks for mb in r], layout), 4),
        "micro_batches": sum(len(r) for r in ranks),
        "micro_batches_per_rank": [len(r) for r in ranks],
        "rank_slots_max_over_mean": round(max(costs) / (sum(costs) / len(costs)), 3),
        "real_tokens": sum(lens),
        "pack_ms": round(ms, 2),
    }


def main() -> None:
    strategies = {"naive": naive, "ffd": ffd, "sorted_balanced": ours("padded")}
    for dist in ("typical", "long"):
        lens = lengths(dist, seed=0)
        for name, pack in strategies.items():
            print(json.dumps(report(f"{dist}/{name}", lens, pack)))
        print(json.dumps(report(f"{dist}/sorted_balanced_thd", lens, ours("packed"), layout="packed")))


if __name__ == "__main__":
    main()
