"""Typed batch containers passed between rollout, algorithm and policy.

Letters: N = B*G sequences (B prompts x G responses, the G responses of a prompt are adjacent),
T = longest prompt+response, L = longest response. Token-level quantities live in the *response
frame* ``[N, L]``: column t of row i is response token t, i.e. ``input_ids[i, prompt_lens[i] + t]``.
Padding is on the right everywhere, so a causal model never sees it before a real token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def response_mask(response_lens: Tensor, width: int) -> Tensor:
    """``[N, width]`` bool, True on the first ``response_lens[i]`` columns."""
    return torch.arange(width, device=response_lens.device)[None, :] < response_lens[:, None]


def gather_response(per_token: Tensor, prompt_lens: Tensor, width: int) -> Tensor:
    """Move ``[N, T]`` values indexed by token position into the response frame ``[N, width]``.

    ``per_token[i, j]`` belongs to token ``input_ids[i, j]`` (e.g. its log-prob given the prefix, which a
    causal LM computes from the logits at position j - 1). Columns past the end of a row read 0.
    """
    idx = prompt_lens[:, None] + torch.arange(width, device=per_token.device)[None, :]
    inside = idx < per_token.shape[1]
    picked = per_token.gather(1, idx.clamp(max=per_token.shape[1] - 1))
    return torch.where(inside, picked, torch.zeros_like(picked))


_TOKEN_FRAME = ("input_ids", "routed_experts")  # [N, T, ...] fields; the other 2-D ones are [N, L]


def _select_rows(obj, idx: Sequence[int] | Tensor, **extra):
    """Rows ``idx`` of every tensor field of a dataclass, trimmed to the longest selected row."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    width_t = int((obj.prompt_lens[idx] + obj.response_lens[idx]).max()) if len(idx) else 0
    width_l = int(obj.response_lens[idx].max()) if len(idx) else 0
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Tensor):
            value = value[idx]
            if value.dim() >= 2:
                value = value[:, : width_t if f.name in _TOKEN_FRAME else width_l]
        out[f.name] = value
    out.update(extra)
    return type(obj)(**out)


@dataclass
class RolloutBatch:
    """Generated and scored responses, before any algorithm step."""

    input_ids: Tensor         # [N, T] long, prompt + response, right-padded
    prompt_lens: Tensor       # [N] long
    response_lens: Tensor     # [N] long, 0 allowed (empty response)
    sampler_logprobs: Tensor  # [N, L] float, the rollout engine's log-prob of each response token
    rewards: Tensor           # [N] float, outcome reward of each response
    truncated: Tensor         # [N] bool, response stopped by the length limit
    group_size: int           # G
    versions: Tensor | None = None  # [N] long, policy version (trainer step) of the engine weights that sampled it
    routed_experts: Tensor | None = None  # [N, T, layers, k] int16, the engine's experts per token (-1: none);
    # only with algo.routing_replay

    @property
    def num_groups(self) -> int:
        return self.rewards.shape[0] // self.group_size

    @property
    def response_mask(self) -> Tensor:  # [N, L] bool
        return response_mask(self.response_lens, self.sampler_logprobs.shape[1])

    def select_groups(self, groups: Sequence[int] | Tensor) -> RolloutBatch:
        """The batch restricted to whole groups (prompts) ``groups``, in that order."""
        groups = torch.as_tensor(groups, dtype=torch.long)
        return self.select((groups[:, None] * self.group_size + torch.arange(self.group_size)[None, :]).reshape(-1))

    def select(self, rows: Sequence[int] | Tensor) -> RolloutBatch:
        """Rows ``rows`` (e.g. a micro-batch), trimmed to its longest sequence."""
        return _select_rows(self, rows)

    @staticmethod
    def concat(batches: Sequence[RolloutBatch]) -> RolloutBatch:
        """Stack batches of the same group size along N, right-padding to the widest."""
        if len({b.group_size for b in batches}) != 1:
            raise ValueError(f"cannot concat batches of group sizes {[b.group_size for b in batches]}")
        fields = {}
        for f in dataclasses.fields(RolloutBatch):
            values = [getattr(b, f.name) for b in batches]
            if f.name == "group_size":
                fields[f.name] = values[0]
            else:  # an optional field is kept only when every batch has it
                fill = -1 if f.name == "routed_experts" else 0  # expert 0 is an expert: -1 is "not routed"
                fields[f.name] = None if any(v is None for v in values) else _cat_padded(values, fill)
        return RolloutBatch(**fields)


def _cat_padded(tensors: Sequence[Tensor], fill: int = 0) -> Tensor:
    """Concatenate along dim 0, right-padding dim 1 with ``fill``."""
    if tensors[0].dim() == 1:
        return torch.cat(list(tensors))
    width = max(t.shape[1] for t in tensors)
    return torch.cat([torch.cat([t, t.new_full((t.shape[0], width - t.shape[1], *t.shape[2:]), fill)], dim=1)
                      for t in tensors])


@dataclass
class TrainBatch:
    """Everything the policy update needs; built once per rollout by ``prepare_train_batch``."""

    input_ids: Tensor       # [N, T] long, prompt + response, right-padded
    prompt_lens: Tensor     # [N] long
    response_lens: Tensor   # [N] long
    loss_mask: Tensor       # [N, L] float, 1 on tokens in the loss (after filters / IS masking)
    advantages: Tensor      # [N, L] float, per-token advantage (0 off the mask)
    old_logprobs: Tensor    # [N, L] float, trainer log-probs before the update (PPO's pi_old)
    is_weights: Tensor      # [N, L] float, detached rollout IS weight (1 when the correction is off)
    ref_logprobs: Tensor | None = None  # [N, L] float, frozen reference model; only when kl_coef > 0
    routed_experts: Tensor | None = None  # [N, T, layers, k] int16, routing to replay; only with routing_replay
    group_size: int = 1     # G

    @property
    def seq_lens(self) -> Tensor:  # [N] long, prompt + response tokens (what a micro-batch holds)
        return self.prompt_lens + self.response_lens

    def select(self, rows: Sequence[int] | Tensor) -> TrainBatch:
        """Rows ``rows`` (a micro- or mini-batch), trimmed to its longest sequence: the padded layout."""
        return _select_rows(self, rows)
