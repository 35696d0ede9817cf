import pytest
import torch

from megatron_grpo.algo import dynamic_sampling, groups_with_signal, overlong_penalty


def test_overlong_penalty_naive_and_by_hand():
    lens = torch.tensor([0, 100, 6143, 6144, 6656, 7167, 7168])
    got = overlong_penalty(lens, max_len=7168, buffer=1024, factor=1.0)
    for n, p in zip(lens.tolist(), got.tolist(), strict=True):
        assert p == pytest.approx(min(-(n - (7168 - 1024)) / 1024 * 1.0, 0.0))
    assert got.tolist()[3:] == pytest.approx([0.0, -0.5, -1023 / 1024, -1.0])
    with pytest.raises(ValueError, match="buffer"):
        overlong_penalty(lens, max_len=100, buffer=100)


def test_groups_with_signal():
    rewards = torch.tensor([1.0, 0, 1, 0, 0, 0, 0.5, 0.5, 0.5])
    assert groups_with_signal(rewards, 3).tolist() == [True, False, False]


def scripted(rollout_factory, signal_per_try):
    """generate(k) returns a batch of 4 groups where the first ``signal_per_try[k]`` have signal."""
    def generate(k):
        batch = rollout_factory(groups=4, group_size=3, seed=k)
        rewards = torch.ones(12, dtype=torch.float64)
        for gidx in range(signal_per_try[k]):
            rewards[3 * gidx] = 0.0
        batch.rewards = rewards
        return batch
    return generate


def test_dynamic_sampling_reaches_target_and_trims(rollout_factory):
    res = dynamic_sampling(scripted(rollout_factory, [2, 0, 3, 4]), target_groups=4, max_tries=4)
    assert res.reached_target and res.tries == 3 and res.groups_kept == 4 and res.groups_seen == 12
    assert res.batch.num_groups == 4
    assert groups_with_signal(res.batch.rewards, 3).all()


def test_dynamic_sampling_stops_at_cap_with_warning(rollout_factory):
    with pytest.warns(RuntimeWarning, match=r"only 3 of 8 groups .* after 2 tries"):
        res = dynamic_sampling(scripted(rollout_factory, [1, 2, 4]), target_groups=8, max_tries=2)
    assert not res.reached_target and res.groups_kept == 3 and res.tries == 2
    assert res.batch.num_groups == 3


def test_dynamic_sampling_nothing_kept(rollout_factory):
    with pytest.warns(RuntimeWarning, match="only 0 of 2"):
        res = dynamic_sampling(scripted(rollout_factory, [0]), target_groups=2, max_tries=1)
    assert res.batch is None and res.groups_kept == 0
