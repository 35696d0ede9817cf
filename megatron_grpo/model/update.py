"""Policy-update stage: old and reference log-probs (when needed), PPO mini-batches over packed
micro-batches.

Exactly on-policy (``algo.is_on_policy``: one PPO epoch, one mini-batch = the whole rollout, the
reference setting) the weights that produce the loss's log-probs ARE pi_old, so pi_old = the current
log-probs, detached: the separate forward pass for old log-probs is skipped and the rollout IS weights
are computed inside the loss from them. Otherwise pi_old comes from a forward pass before the first
update. With a KL term the reference's log-probs come from one more such pass, with the reference weights
swapped in, packed into micro-batches as the update packs them.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from megatron.core import parallel_state as ps

from megatron_grpo import platform
from megatron_grpo.algo import (
    LossNorm,
    RolloutBatch,
    TrainBatch,
    gather_response,
    is_on_policy,
    mini_batches,
    pack_micro_batches,
    policy_loss,
    prepare_train_batch,
    rollout_correction,
)
from megatron_grpo.config import AlgoConfig
from megatron_grpo.model.policy import MegatronPolicy
from megatron_grpo.model.reference import ReferencePolicy


def _token_frame(per_position: torch.Tensor, prompt_lens: torch.Tensor, width: int) -> torch.Tensor:
    """Model outputs at position t describe token t+1; shift so column j is token j, then take responses."""
    return gather_response(F.pad(per_position[:, :-1], (1, 0)), prompt_lens, width)


def _my_micro_batches(seq_lens: torch.Tensor, token_budget: int) -> tuple[list[list[int]], int]:
    """This DP rank's micro-batches, and how many padding micro-batches it must run after them: expert
    parallelism exchanges tokens inside every micro-batch's forward, so each rank of an EP group runs as many
    as the busiest (the packer gives every rank the same count only when there are enough sequences)."""
    plan = pack_micro_batches(seq_lens.tolist(), ps.get_data_parallel_world_size(), token_budget)
    mine = plan.ranks[ps.get_data_parallel_rank()]
    most = max(len(r) for r in plan.ranks) if ps.get_expert_model_parallel_world_size() > 1 else len(mine)
    return mine, most - len(mine)


def rollout_logprobs(policy: MegatronPolicy, rollout: RolloutBatch, temperature: float,
                     token_budget: int) -> torch.Tensor:
    """The model's log-probs ``[N, L]`` of the response tokens (pi_old, or the reference's with its weights
    swapped in), on every rank (each DP rank computes a share; one all-reduce of the disjoint shares, on
    the device; the result is a host tensor)."""
    width = rollout.sampler_logprobs.shape[1]
    seq_lens = rollout.prompt_lens + rollout.response_lens
    mine, padding = _my_micro_batches(seq_lens, token_budget)
    inputs = [_forward_inputs(rollout.select(idx)) for idx in mine] + [_forward_inputs(rollout.select([0]))] * padding
    outs = policy.logprobs(inputs, temperature)[: len(mine)]  # a padding micro-batch's output is dropped
    result = torch.zeros(rollout.sampler_logprobs.shape, device=platform.device())
    for idx, out in zip(mine, outs, strict=True):
        result[idx] = _token_frame(out["logprobs"], platform.to_device(rollout.prompt_lens[idx]), width)
    dist.all_reduce(result, group=ps.get_data_parallel_group())
    return platform.to_host(result)


def _forward_inputs(rows: RolloutBatch | TrainBatch) -> dict[str, torch.Tensor]:
    """What a forward pass reads: the tokens, and the engine's routing to replay when it was recorded."""
    inputs = {"tokens": rows.input_ids}
    if rows.routed_experts is not None:
        inputs["routed_experts"] = rows.routed_experts
    return inputs


def _loss_fn(cfg: AlgoConfig, norm: LossNorm, on_policy: bool):
    def loss_fn(logprobs, entropy, mb):
        width = mb["loss_mask"].shape[1]
        lp = _token_frame(logprobs, mb["prompt_lens"], width)
        ent = _token_frame(entropy, mb["prompt_lens"], width)
        mask, old, is_w = mb["loss_mask"], mb["old_logprobs"], mb["is_weights"]
        metrics = {}
        if on_policy:  # pi_old is this pass's own log-probs: the IS weights are only known here
            old = lp.detach()
            is_w, _, metrics = rollout_correction(old, mb["sampler_logprobs"], mask, cfg, norm.tokens)
        loss, algo_metrics = policy_loss(lp, old, mb["advantages"], mask, norm, cfg, is_weights=is_w, entropy=ent,
                                         ref_logprobs=mb.get("ref_logprobs"))
        metrics.update({f"actor/{k}": v for k, v in algo_metrics.items()})
        metrics["actor/entropy"] = (ent.detach() * mask).sum() / norm.tokens
        return loss, metrics

    return loss_fn


def _micro_batch(batch: TrainBatch, rollout: RolloutBatch, rows: list[int]) -> dict[str, torch.Tensor]:
    sub = batch.select(rows)
    width = sub.loss_mask.shape[1]
    mb = {**_forward_inputs(sub), "prompt_lens": sub.prompt_lens,
          "loss_mask": sub.loss_mask, "advantages": sub.advantages, "old_logprobs": sub.old_logprobs,
          "is_weights": sub.is_weights, "sampler_logprobs": rollout.sampler_logprobs[rows][:, :width]}
    if sub.ref_logprobs is not None:
        mb["ref_logprobs"] = sub.ref_logprobs
    return mb


def _padding(batch: TrainBatch, rollout: RolloutBatch, row: int) -> dict[str, torch.Tensor]:
    """A micro-batch that runs the model and adds nothing: ``row`` with an empty loss mask."""
    mb = _micro_batch(batch, rollout, [row])
    return {**mb, "loss_mask": torch.zeros_like(mb["loss_mask"])}


def update_policy(policy: MegatronPolicy, rollout: RolloutBatch, cfg: AlgoConfig, max_response_len: int,
                  temperature: float, reference: ReferencePolicy | None = None) -> dict[str, float]:
    """All PPO epochs x mini-batches of one rollout; returns metrics (last optimizer step's + batch-level)."""
    on_policy = is_on_policy(cfg, rollout.num_groups)
    budget = cfg.micro_batch_tokens
    old = rollout.sampler_logprobs if on_policy else rollout_logprobs(policy, rollout, temperature, budget)
    ref = None
    if reference is not None:
        with reference.swapped_in():
            ref = rollout_logprobs(policy, rollout, temperature, budget)
    batch, metrics = prepare_train_batch(rollout, old, cfg, max_response_len, ref_logprobs=ref)
    if on_policy:  # the mismatch / IS metrics come from the loss (pi_old is only known there)
        metrics = {k: v for k, v in metrics.items() if not k.startswith("mismatch/")}
    seq_lens = batch.seq_lens
    steps = mini_batches(rollout.num_groups, rollout.group_size, cfg.mini_batch_prompts, cfg.ppo_epochs)
    applied = 0
    for rows in steps:
        local, padding = _my_micro_batches(seq_lens[rows], cfg.micro_batch_tokens)
        mine = [[rows[i] for i in mb] for mb in local]
        counts = platform.to_device(LossNorm.counts(batch.loss_mask[idx] for idx in mine))
        dist.all_reduce(counts, group=ps.get_data_parallel_group())
        norm = LossNorm.from_counts(platform.to_host(counts), max_response_len)
        mbs = [_micro_batch(batch, rollout, idx) for idx in mine] + [_padding(batch, rollout, rows[0])] * padding
        entropy = "loss" if cfg.entropy_coef > 0 else "metric"
        step_metrics, ok, grad_norm = policy.train_step(mbs, _loss_fn(cfg, norm, on_policy), temperature, entropy)
        applied += int(ok)
        metrics.update(step_metrics)
        metrics["actor/grad_norm"] = grad_norm
    metrics.update({"actor/updates_applied": float(applied), "actor/updates": float(len(steps)),
                    "actor/lr": policy.lr, "actor/on_policy": float(on_policy)})
    return metrics
