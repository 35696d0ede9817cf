import math
import statistics

import pytest
import torch

from megatron_grpo.algo import broadcast_to_tokens, group_advantages


def naive_advantages(rewards: list[float], g: int, mode: str, eps: float) -> list[float]:
    out = []
    for start in range(0, len(rewards), g):
        group = rewards[start:start + g]
        mean = sum(group) / g
        for i, r in enumerate(group):
            if mode == "grpo":
                out.append((r - mean) / (statistics.stdev(group) + eps))
            elif mode == "drgrpo":
                out.append(r - mean)
            else:
                others = [x for j, x in enumerate(group) if j != i]
                out.append(r - sum(others) / len(others))
    return out


@pytest.mark.parametrize("mode", ["grpo", "drgrpo", "rloo"])
@pytest.mark.parametrize("g", [2, 4, 8])
def test_group_advantages_match_naive(mode, g):
    gen = torch.Generator().manual_seed(g)
    rewards = torch.randint(0, 2, (5 * g,), generator=gen).double()
    rewards[:g] = 1.0  # all equal
    rewards[g:2 * g] = torch.randn(g, generator=gen, dtype=torch.float64)  # continuous
    got = group_advantages(rewards, g, mode, eps=1e-6)
    want = naive_advantages(rewards.tolist(), g, mode, 1e-6)
    assert got.tolist() == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert got[:g].abs().max() == 0  # no signal in an all-equal group


def test_group_advantages_errors():
    with pytest.raises(ValueError, match="group_size=1"):
        group_advantages(torch.ones(4), 1)
    with pytest.raises(ValueError, match="shape"):
        group_advantages(torch.ones(5), 2)


def test_broadcast_zero_outside_mask_and_empty_response():
    adv = torch.tensor([2.0, -1.0, 0.5])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=torch.bool)
    got = broadcast_to_tokens(adv, mask)
    for i in range(3):
        for t in range(3):
            assert got[i, t] == (adv[i] if mask[i, t] else 0.0)


def test_grpo_scale_of_binary_group():
    # 1 right out of 4: mean 0.25, unbiased std 0.5 -> +1.5 / -0.5
    got = group_advantages(torch.tensor([1.0, 0, 0, 0]), 4, eps=0.0)
    assert got.tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5])
    assert not math.isnan(float(got.sum()))
