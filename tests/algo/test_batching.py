import random

import pytest
import torch

from megatron_grpo.algo import micro_batch_cost, mini_batches, pack_micro_batches, padding_fraction


def long_tail(n, seed):
    rng = random.Random(seed)
    return [min(7168, int(rng.lognormvariate(7.3, 0.9))) + rng.randint(30, 300) for _ in range(n)]


@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("seed,n,dp,budget", [(0, 512, 8, 32768), (1, 64, 2, 16384), (2, 7, 4, 8000),
                                              (3, 3, 8, 9000), (4, 100, 1, 7500)])
def test_pack_is_a_partition_within_budget(layout, seed, n, dp, budget):
    lengths = long_tail(n, seed)
    plan = pack_micro_batches(lengths, dp, budget, layout)
    assert len(plan.ranks) == dp
    flat = [i for rank in plan.ranks for mb in rank for i in mb]
    assert sorted(flat) == list(range(n))  # nothing lost, nothing duplicated, sequences whole
    for rank in plan.ranks:
        for mb in rank:
            assert mb and micro_batch_cost([lengths[i] for i in mb], layout) <= budget
    if n >= dp * max(len(r) for r in plan.ranks):
        assert len({len(r) for r in plan.ranks}) == 1  # same micro-batch count on every rank
    # naive padding fraction
    slots = real = 0
    for rank in plan.ranks:
        for mb in rank:
            longest = max(lengths[i] for i in mb)
            for i in mb:
                slots += longest if layout == "padded" else lengths[i]
                real += lengths[i]
    assert plan.padding_fraction == pytest.approx((slots - real) / slots)
    assert sum(plan.rank_cost) == slots


def test_reference_like_batch_is_tight_and_balanced():
    lengths = long_tail(512, 7)
    plan = pack_micro_batches(lengths, 8, 32768)
    assert plan.padding_fraction < 0.05
    assert max(plan.rank_cost) / min(plan.rank_cost) < 1.1


def test_too_long_sequence_error_names_length_and_index():
    with pytest.raises(ValueError, match=r"sequence 2 has 40000 tokens.*budget 32768"):
        pack_micro_batches([10, 20, 40000, 5], 2, 32768)


def test_empty_and_padding_fraction_helper():
    assert pack_micro_batches([], 2, 100).ranks == [[], []]
    assert padding_fraction([4, 2, 2], [[0, 1], [2]]) == pytest.approx(2 / 10)
    assert padding_fraction([4, 2, 2], [[0, 1], [2]], "packed") == 0.0


def test_mini_batches_whole_groups_and_epochs():
    steps = mini_batches(num_groups=5, group_size=3, mini_batch_prompts=2, epochs=2)
    assert len(steps) == 6
    assert steps[0] == [0, 1, 2, 3, 4, 5] and steps[2] == [12, 13, 14]
    shuffled = mini_batches(5, 3, 2, epochs=2, generator=torch.Generator().manual_seed(0))
    for epoch in (shuffled[:3], shuffled[3:]):
        flat = [i for step in epoch for i in step]
        assert sorted(flat) == list(range(15))
        for step in epoch:  # whole groups: each group's 3 rows together
            assert all(step[k] // 3 == step[k + 1] // 3 == step[k + 2] // 3 and step[k] % 3 == 0
                       for k in range(0, len(step), 3))
    assert mini_batches(64, 8, 64) == [list(range(512))]  # reference: one step per rollout
