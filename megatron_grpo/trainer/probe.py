"""Refit check: the engine's log-probs of a few fixed sequences against the trainer's, after a refit.

A wrong tensor in the refit (a swapped shard, a stale bucket) shows up here as a large difference,
long before it shows up as a reward curve that does not rise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_grpo import platform
from megatron_grpo.algo import RolloutBatch
from megatron_grpo.model.policy import MegatronPolicy
from megatron_grpo.rollout.groups import EngineGroup

PROBE_SEQUENCES = 2


@dataclass
class Probe:
    """The trainer's side of the check, taken while its weights are on the device."""

    sequences: list[list[int]]
    prompt_lens: list[int]
    trainer: torch.Tensor  # [n, T] host log-probs, position t scoring token t + 1


def probe_trainer(policy: MegatronPolicy, rollout: RolloutBatch) -> Probe:
    """Collective: the trainer's log-probs of the rollout's first sequences."""
    rows = list(range(min(PROBE_SEQUENCES, rollout.rewards.numel())))
    lengths = rollout.prompt_lens[rows] + rollout.response_lens[rows]
    tokens = rollout.input_ids[rows][:, : int(lengths.max())]
    trainer = platform.to_host(policy.logprobs([{"tokens": tokens}], temperature=1.0)[0]["logprobs"])
    return Probe([tokens[i, : int(lengths[i])].tolist() for i in range(len(rows))],
                 [int(p) for p in rollout.prompt_lens[rows]], trainer)


def probe_engine(probe: Probe, engines: EngineGroup) -> dict[str, float]:
    """Collective. Mean |trainer - engine| log-prob over the probe's responses, for every engine of the run;
    the worst engine's is reported."""
    every = engines.score_each(probe.sequences, probe.prompt_lens)  # collective: a colocated engine spans ranks
    verdict = [max(_abs_diff(probe, scores) for scores in every) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(verdict, src=0)
    return {"rollout/logprob_abs_diff": verdict[0]}


def _abs_diff(probe: Probe, scores: list[list[float]]) -> float:
    diffs = []
    for i, (p, lp) in enumerate(zip(probe.prompt_lens, scores, strict=True)):
        # trainer position t scores token t + 1: the response tokens p..end come from positions p-1..end-1
        ours = probe.trainer[i, p - 1: p - 1 + len(lp)]
        diffs.append((ours - torch.tensor(lp, dtype=ours.dtype)).abs())
    return float(torch.cat(diffs).mean()) if diffs and sum(len(d) for d in diffs) else 0.0


def logprob_probe(policy: MegatronPolicy, engines: EngineGroup, rollout: RolloutBatch) -> dict[str, float]:
    """Both sides at once (trainer and engine both on the device)."""
    return probe_engine(probe_trainer(policy, rollout), engines)
