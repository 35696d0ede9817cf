"""``to_rollout_batch``: samples become right-padded tensors; the engine's MoE routing rides along, -1 where
the engine routed nothing, and a routing that does not fit its sequence is refused naming the sample."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from megatron_grpo.rollout.types import Sample
from megatron_grpo.trainer.rollout import to_rollout_batch


@dataclasses.dataclass
class _Item:
    prompt_ids: list[int]


def _sample(tokens: list[int], routed: torch.Tensor | None) -> Sample:
    return Sample(token_ids=tokens, logprobs=[-1.0] * len(tokens), text="", finish_reason="stop",
                  routed_experts=routed)


def _routing(rows: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 8, (rows, 3, 2), generator=torch.Generator().manual_seed(seed)).to(torch.int16)


def test_routing_is_padded_with_not_routed():
    items = [_Item([1, 2, 3]), _Item([4])]
    routings = [_routing(3 + 2 - 1, 0), _routing(3 + 4 - 1, 1), _routing(1 + 1 - 1, 2), _routing(1 + 5 - 1, 3)]
    samples = [[_sample([5, 6], routings[0]), _sample([7, 8, 9, 10], routings[1])],
               [_sample([11], routings[2]), _sample([12, 13, 14, 15, 16], routings[3])]]
    batch = to_rollout_batch(items, samples, [0.0, 1.0, 0.0, 1.0], group_size=2)
    assert batch.routed_experts.shape == (4, 7, 3, 2) and batch.routed_experts.dtype == torch.int16
    for row, routed in enumerate(routings):
        torch.testing.assert_close(batch.routed_experts[row, : len(routed)], routed)
        assert (batch.routed_experts[row, len(routed):] == -1).all()


def test_without_routing_there_is_none_and_a_misfit_is_named():
    items = [_Item([1, 2])]
    plain = to_rollout_batch(items, [[_sample([3], None), _sample([4], None)]], [0.0, 1.0], group_size=2)
    assert plain.routed_experts is None
    with pytest.raises(ValueError, match=r"sample 1: routed experts of shape \(9, 3, 2\) for a sequence of 3 tokens"):
        to_rollout_batch(items, [[_sample([3], _routing(2, 0)), _sample([4], _routing(9, 1))]], [0.0, 1.0], 2)
