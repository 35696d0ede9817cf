"""Random GRPO batches with the awkward cases every test wants: empty, 1-token and full responses."""

import pytest
import torch

from megatron_grpo.algo import RolloutBatch, response_mask


def make_rollout(groups: int = 3, group_size: int = 4, max_prompt: int = 5, max_resp: int = 6,
                 seed: int = 0, dtype: torch.dtype = torch.float64) -> RolloutBatch:
    g = torch.Generator().manual_seed(seed)
    n = groups * group_size
    prompt_lens = torch.randint(1, max_prompt + 1, (n,), generator=g)
    response_lens = torch.randint(0, max_resp + 1, (n,), generator=g)
    response_lens[:3] = torch.tensor([0, 1, max_resp])  # empty, single token, full
    width = int((prompt_lens + response_lens).max())
    input_ids = torch.randint(1, 11, (n, width), generator=g)
    input_ids[torch.arange(width)[None, :] >= (prompt_lens + response_lens)[:, None]] = 0
    mask = response_mask(response_lens, max_resp)
    sampler = torch.where(mask, -torch.rand(n, max_resp, generator=g, dtype=dtype) * 3, 0.0)
    rewards = torch.randint(0, 2, (n,), generator=g).to(dtype)
    rewards[:group_size] = 1.0  # one group with all-equal rewards
    return RolloutBatch(input_ids=input_ids, prompt_lens=prompt_lens, response_lens=response_lens,
                        sampler_logprobs=sampler, rewards=rewards, truncated=response_lens == max_resp,
                        group_size=group_size)


@pytest.fixture
def rollout() -> RolloutBatch:
    return make_rollout()


@pytest.fixture
def rollout_factory():
    return make_rollout
