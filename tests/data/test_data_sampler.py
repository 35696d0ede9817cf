"""Sampler: seeded order, exact resume, disjoint DP shards covering the epoch, drop-last."""

import pytest

from megatron_grpo.config import DataConfig
from megatron_grpo.data import PromptSampler, epoch_order


def _run(sampler: PromptSampler, steps: int) -> list[list[int]]:
    return [sampler.next_batch() for _ in range(steps)]


def test_same_seed_same_order_other_seed_or_epoch_differs():
    a = _run(PromptSampler(50, 8, shuffle=True, seed=3), 14)
    assert a == _run(PromptSampler(50, 8, shuffle=True, seed=3), 14)
    assert a != _run(PromptSampler(50, 8, shuffle=True, seed=4), 14)
    assert epoch_order(50, 3, 0, True) != epoch_order(50, 3, 1, True)
    assert sorted(epoch_order(50, 3, 1, True)) == list(range(50))


def test_no_shuffle_is_file_order_with_drop_last():
    s = PromptSampler(10, 4)
    assert _run(s, 3) == [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]]   # 8, 9 never seen: drop-last
    assert (s.epoch, s.step) == (1, 1)


@pytest.mark.parametrize("stop", [0, 4, 6, 9])
def test_resume_from_saved_position_gives_identical_remaining_order(stop):
    full = _run(PromptSampler(50, 8, shuffle=True, seed=7), 16)   # 6 steps per epoch: crosses 2 epoch ends
    first = PromptSampler(50, 8, shuffle=True, seed=7)
    head = _run(first, stop)
    state = dict(first.state_dict())
    resumed = PromptSampler(50, 8, shuffle=True, seed=7)
    resumed.load_state_dict(state)
    assert head + _run(resumed, 16 - stop) == full


def test_resume_refuses_other_data_or_settings():
    state = PromptSampler(50, 8, shuffle=True, seed=7).state_dict()
    for other in (PromptSampler(51, 8, shuffle=True, seed=7), PromptSampler(50, 8, shuffle=True, seed=8),
                  PromptSampler(50, 4, shuffle=True, seed=7), PromptSampler(50, 8, seed=7)):
        with pytest.raises(ValueError, match="sampler state was saved with"):
            other.load_state_dict(state)


def test_dp_ranks_get_disjoint_shards_covering_the_epoch():
    n, b, dp = 103, 12, 4
    ranks = [PromptSampler(n, b, dp_rank=r, dp_size=dp, shuffle=True, seed=1) for r in range(dp)]
    single = PromptSampler(n, b, shuffle=True, seed=1)
    seen = []
    for _ in range(single.steps_per_epoch):
        shards = [s.next_batch() for s in ranks]
        assert all(len(sh) == b // dp for sh in shards)
        assert sum(shards, []) == single.next_batch()          # rank order concatenates to the global batch
        seen += sum(shards, [])
    assert len(seen) == len(set(seen)) == (n // b) * b
    assert seen == epoch_order(n, 1, 0, True)[:len(seen)]     # the dropped tail is the order's last n % b


def test_resume_with_another_dp_size_sees_the_same_global_batches():
    reference = _run(PromptSampler(40, 8, shuffle=True, seed=2), 7)
    first = PromptSampler(40, 8, dp_rank=0, dp_size=2, shuffle=True, seed=2)
    first.next_batch()
    first.next_batch()
    state = first.state_dict()
    ranks = [PromptSampler(40, 8, dp_rank=r, dp_size=4, shuffle=True, seed=2) for r in range(4)]
    for s in ranks:
        s.load_state_dict(state)
    assert [sum((s.next_batch() for s in ranks), []) for _ in range(5)] == reference[2:]


def test_from_config_and_invalid_shapes():
    s = PromptSampler.from_config(DataConfig(batch_prompts=4, shuffle=True, seed=5), 9, dp_rank=1, dp_size=2)
    assert (s.batch_prompts, s.shuffle, s.seed, s.steps_per_epoch) == (4, True, 5, 2)
    with pytest.raises(ValueError, match="not divisible"):
        PromptSampler(10, 3, dp_size=2)
    with pytest.raises(ValueError, match="do not fill one batch"):
        PromptSampler(3, 4)
