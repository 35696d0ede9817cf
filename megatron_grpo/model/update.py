"""Policy-update stage: old log-probs (when needed), PPO mini-batches over packed micro-batches.

Exactly on-policy (one PPO epoch, one mini-batch = the whole rollout, the reference setting) the
weights that produce the loss's log-probs ARE pi_old, so pi_old = the current log-probs, detached:
the separate forward pass for old log-probs is skipped and the rollout IS weights are computed inside
the loss from them. Otherwise pi_old comes from a forward pass before the first update.
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
    grpo_loss,
    mini_batches,
    pack_micro_batches,
    prepare_train_batch,
    rollout_is_weights,
)
from megatron_grpo.config import AlgoConfig
from megatron_grpo.model.policy import MegatronPolicy


def is_on_policy(cfg: AlgoConfig, num_groups: int) -> bool:
    return cfg.ppo_epochs == 1 and cfg.mini_batch_prompts >= num_groups and not cfg.rollout_is_mask


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


def old_logprobs(policy: MegatronPolicy, rollout: RolloutBatch, temperature: float,
                 token_budget: int) -> torch.Tensor:
    """pi_old log-probs ``[N, L]`` of the response tokens, on every rank (each DP rank computes a share;
    one all-reduce of the disjoint shares, on the device; the result is a host tensor)."""
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
        if on_policy:
            old = lp.detach()
            if cfg.rollout_is != "none":
                is_w, _ = rollout_is_weights(old, mb["sampler_logprobs"], mask, cfg.rollout_is,
                                             cfg.rollout_is_threshold)
            diff = (old - mb["sampler_logprobs"]).clamp(-20, 20) * mask
            metrics = {"mismatch/abs_logp": diff.abs().sum() / norm.tokens,
                       "mismatch/k3_kl": (diff.exp() - 1 - diff).mul(mask).sum() / norm.tokens}
            if cfg.rollout_is != "none":
                metrics["mismatch/is_weight_mean"] = (is_w * mask).sum() / norm.tokens
        loss, algo_metrics = grpo_loss(lp, old, mb["advantages"], mask, norm, cfg, is_weights=is_w, entropy=ent)
        metrics.update({f"actor/{k}": v for k, v in algo_metrics.items()})
        metrics["actor/entropy"] = (ent.detach() * mask).sum() / norm.tokens
        return loss, metrics

    return loss_fn


def _micro_batch(batch: TrainBatch, rollout: RolloutBatch, rows: list[int]) -> dict[str, torch.Tensor]:
    sub = batch.select(rows)
    width = sub.loss_mask.shape[1]
    return {**_forward_inputs(sub), "prompt_lens": sub.prompt_lens,
            "loss_mask": sub.loss_mask, "advantages": sub.advantages, "old_logprobs": sub.old_logprobs,
            "is_weights": sub.is_weights, "sampler_logprobs": rollout.sampler_logprobs[rows][:, :width]}


def _padding(batch: TrainBatch, rollout: RolloutBatch, row: int) -> dict[str, torch.Tensor]:
    """A micro-batch that runs the model and adds nothing: ``row`` with an empty loss mask."""
    mb = _micro_batch(batch, rollout, [row])
    return {**mb, "loss_mask": torch.zeros_like(mb["loss_mask"])}


def update_policy(policy: MegatronPolicy, rollout: RolloutBatch, cfg: AlgoConfig, max_response_len: int,
                  temperature: float) -> dict[str, float]:
    """All PPO epochs x mini-batches of one rollout; returns metrics (last optimizer step's + batch-level)."""
    on_policy = is_on_policy(cfg, rollout.num_groups)
    old = rollout.sampler_logprobs if on_policy else old_logprobs(policy, rollout, temperature, cfg.micro_batch_tokens)
    batch, metrics = prepare_train_batch(rollout, old, cfg, max_response_len)
    # on-policy, the mismatch / IS metrics come from the loss (pi_old is only known there)
    stale = ("mismatch", "rollout_is") if on_policy else ()
    metrics = {f"algo/{k}": v for k, v in metrics.items() if not k.startswith(stale)}
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
