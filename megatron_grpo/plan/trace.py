"""The traced plan: the real training step of a config, run as one rank of the target job on the stand-in
accelerator (platform ``meta``, torch's fake process group), with its device memory measured.

``trace_rank(cfg, arch, world, rank)`` builds the policy for that rank's layout exactly as the trainer
does (Megatron-Core ``GPTModel`` chunks, DDP, the distributed optimizer), then runs two policy updates
through ``model.update.update_policy`` (forward, loss, backward, finite check, grad norm, optimizer step,
metric reductions) and the sender side of the refit into a stand-in engine that holds buckets as a real
one does. The rollout is the worst case the config allows: every sequence full length
(``max_prompt_length + max_response_length``), packed to ``algo.micro_batch_tokens``, enough for
``2 x PP`` micro-batches per data-parallel rank so a 1F1B pipeline fills, as one mini-batch. Weights hold
no values and no memory is allocated, so a 32B layout runs on a laptop CPU in seconds per step.

The first update creates the optimizer state; the second is measured: its peak and what was live then,
split by ``MemoryTracker`` category (params, grads, optimizer, activations, logits, other). A process
traces any number of ranks one after another, always on the meta platform.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from megatron_grpo.config import Config
from megatron_grpo.families import ModelArch

CATEGORIES = ("params", "grads", "optimizer", "activations", "logits", "other")


@dataclass(frozen=True)
class RankTrace:
    """Measured device bytes of one rank."""

    rank: int
    world: int
    pp_rank: int
    micro_batches: int          # per update on this rank
    micro_batch_tokens: int     # sequences x length of each micro-batch
    peak: int                   # training step peak
    breakdown: dict[str, int]   # live bytes by category at that peak
    category_peaks: dict[str, int]  # each category's own highest live bytes during the step
    refit_peak: int             # refit peak minus what was live before it (buckets + tensors in flight)
    seconds: float              # wall time of the traced step (both updates and the refit)

    @property
    def static(self) -> int:
        return sum(self.breakdown[c] for c in ("params", "grads", "optimizer", "other"))


class EmptyHFWeights(Mapping[str, torch.Tensor]):
    """HF-named weights with shapes and no values (meta): the import path runs, nothing is allocated."""

    def __init__(self, arch: ModelArch):
        from megatron_grpo.families import hf_layout

        self._layout = hf_layout(arch)

    def __getitem__(self, name: str) -> torch.Tensor:
        return torch.empty(self._layout[name], device="meta")

    def __iter__(self) -> Iterator[str]:
        return iter(self._layout)

    def __len__(self) -> int:
        return len(self._layout)


class BucketSink:
    """The engine side of a refit, for the trace: takes the stream in buckets and drops each, as an engine
    does after copying it into its weights; wants exactly the model's HF tensors, cannot read them back."""

    def __init__(self, bucket_bytes: int, names: set[str]):
        self.bucket_bytes, self.names = bucket_bytes, names

    def check_manifest(self, manifest) -> None:
        if set(manifest) != self.names:
            raise ValueError(f"expected the model's {len(self.names)} HF tensors, got {len(manifest)}")

    def update_weights(self, named_tensors, version: int = 0) -> None:
        from megatron_grpo.rollout.types import send_in_buckets

        send_in_buckets(named_tensors, self.bucket_bytes, lambda bucket: None)

    def weight_checksums(self) -> None:
        return None


def full_length_rollout(cfg: Config, dp: int, pp: int):
    """A scored rollout of full-length sequences (``max_prompt_length + max_response_length``, capped at
    the token budget): ``2 x pp`` micro-batches of ``micro_batch_tokens // length`` sequences on each of
    ``dp`` ranks (more when whole groups of ``rollout.train.n`` need it), all of one shape. Returns it
    and the tokens of one micro-batch."""
    import math

    from megatron_grpo.algo import RolloutBatch

    seq = min(cfg.rollout.max_prompt_length + cfg.rollout.train.max_response_length, cfg.algo.micro_batch_tokens)
    response = max(seq - cfg.rollout.max_prompt_length, 1)
    per_micro_batch = cfg.algo.micro_batch_tokens // seq
    group = cfg.rollout.train.n
    seqs = dp * 2 * pp * per_micro_batch
    seqs *= group // math.gcd(group, seqs)
    rewards = torch.arange(seqs, dtype=torch.float32) % 2  # half right: every group carries signal
    return RolloutBatch(
        input_ids=torch.zeros(seqs, seq, dtype=torch.long),
        prompt_lens=torch.full((seqs,), seq - response), response_lens=torch.full((seqs,), response),
        sampler_logprobs=torch.full((seqs, response), -1.0), rewards=rewards,
        truncated=torch.zeros(seqs, dtype=torch.bool), group_size=group,
    ), per_micro_batch * seq


def trace_rank(cfg: Config, arch: ModelArch, world: int, rank: int, gpus_per_node: int = 8) -> RankTrace:
    """Run and measure ``rank`` of a ``world``-rank job (see the module docstring)."""
    from megatron.core import parallel_state as ps

    from megatron_grpo import platform
    from megatron_grpo.launch import DistEnv, init_distributed, shutdown
    from megatron_grpo.model.policy import MegatronPolicy
    from megatron_grpo.model.update import update_policy
    from megatron_grpo.plan.memory import MemoryTracker
    from megatron_grpo.refit.stream import refit

    platform.setup_platform("meta", local_rank=rank % gpus_per_node)
    logging.getLogger("megatron").setLevel(logging.WARNING)  # its per-build INFO lines, once per traced rank
    start = time.perf_counter()
    tracker = MemoryTracker("meta")
    with tracker:
        init_distributed(cfg.parallel, cfg.trainer.seed, DistEnv(rank, world, rank % gpus_per_node, "", 0, "standin"))
        try:
            with tracker.in_phase("other"):
                policy = MegatronPolicy(arch, cfg.model, cfg.parallel, cfg.optim, total_steps=2,
                                        hf_weights=EmptyHFWeights(arch), seed=cfg.trainer.seed)
            _optimizer_step_in_phase(policy, tracker)
            dp, pp = ps.get_data_parallel_world_size(), ps.get_pipeline_model_parallel_world_size()
            rollout, mb_tokens = full_length_rollout(cfg, dp, pp)
            _logits_phase_hooks(policy, tracker)
            sampling = cfg.rollout.train
            # One mini-batch per epoch: the trace's rollout is sized by micro-batches, not by data.batch_prompts.
            algo = dataclasses.replace(cfg.algo, mini_batch_prompts=rollout.num_groups)
            with tracker.in_phase("activations"):  # the first update creates the optimizer state
                update_policy(policy, rollout, algo, sampling.max_response_length, sampling.temperature)
            _tag_static(tracker, policy)
            tracker.reset_peak()
            with tracker.in_phase("activations"):
                update_policy(policy, rollout, algo, sampling.max_response_length, sampling.temperature)
            peak, breakdown = tracker.peak, {c: tracker.peak_breakdown.get(c, 0) for c in CATEGORIES}
            category_peaks = {c: tracker.category_peaks.get(c, 0) for c in CATEGORIES}
            before = tracker.total
            tracker.reset_peak()
            with tracker.in_phase("refit"):
                sink = BucketSink(cfg.rollout.refit_bucket_mb << 20, set(EmptyHFWeights(arch)))
                refit(policy, sink, platform.DTYPES[cfg.rollout.engine_dtype(cfg.model.dtype)])
            refit_peak = tracker.peak - before
            pp_rank = ps.get_pipeline_model_parallel_rank()
            micro_batches = -(-rollout.rewards.shape[0] // (dp * (mb_tokens // rollout.input_ids.shape[1])))
        finally:
            shutdown()
    return RankTrace(rank=rank, world=world, pp_rank=pp_rank, micro_batches=micro_batches,
                     micro_batch_tokens=mb_tokens, peak=peak, breakdown=breakdown, category_peaks=category_peaks,
                     refit_peak=refit_peak,
                     seconds=time.perf_counter() - start)


def _logits_phase_hooks(policy, tracker) -> None:
    """Allocations from the output layer's forward to its input's gradient are the logits' memory: the
    logits, their fp32 copy and softmax in the loss, the loss's backward and the output layer's. Each
    model forward starts as activations; the last stage's output layer switches to logits, and the
    gradient reaching its input switches back (the backward continues into the decoder)."""
    from megatron_grpo.convert.weights import unwrap

    def to(phase):
        def hook(*_):
            tracker.phase = phase
        return hook

    def enter_output_layer(module, args):
        tracker.phase = "logits"
        if torch.is_grad_enabled() and args[0].requires_grad:
            args[0].register_hook(to("activations"))

    for chunk in policy.model:
        model = unwrap(chunk)
        model.register_forward_pre_hook(to("activations"))
        if getattr(model, "output_layer", None) is not None and model.post_process:
            model.output_layer.register_forward_pre_hook(enter_output_layer)


def _optimizer_step_in_phase(policy, tracker) -> None:
    """The optimizer step's allocations (Adam state, fp32 copies, norms) are filed as optimizer memory."""
    step = policy.optimizer.step

    def traced_step(*args, **kwargs):
        with tracker.in_phase("optimizer"):
            return step(*args, **kwargs)

    policy.optimizer.step = traced_step


def _tag_static(tracker, policy) -> None:
    """File what persists across steps by what it is: optimizer state and fp32 master weights, then
    parameters (a master weight that is a view of its parameter counts as the parameter), then DDP's
    gradient buffers."""
    inner = getattr(policy.optimizer, "chained_optimizers", [policy.optimizer])
    for opt in inner:
        torch_opt = opt.optimizer
        tracker.tag((p for group in torch_opt.param_groups for p in group["params"]), "optimizer")
        tracker.tag((v for state in torch_opt.state.values() for v in state.values()
                     if isinstance(v, torch.Tensor)), "optimizer")
    for chunk in policy.model:
        tracker.tag(chunk.parameters(), "params")
        for buffer in chunk.buffers + chunk.expert_parallel_buffers:
            tracker.tag([buffer.param_data], "params")
            tracker.tag([buffer.grad_data], "grads")


def default_ranks(world: int, pipeline: int) -> list[int]:
    """The first rank, and with pipeline parallelism the last: the first and last pipeline stage (Megatron
    orders ranks TP, DP, PP; all ranks of a stage hold the same shapes)."""
    return [0, world - 1] if pipeline > 1 else [0]


def compare(formula, traces: list[RankTrace]) -> list[tuple[str, float, float]]:
    """(row, formula GiB, traced GiB) for the busiest traced rank; the activations row is the dynamic part
    of the peak (activations, logits, the layer in backward), as the formula's peak adds it."""
    gib = 2**30
    busiest = max(traces, key=lambda t: t.peak)
    b, f = busiest.breakdown, formula
    return [
        ("params", f.params / gib, b["params"] / gib),
        ("grads", f.grads / gib, b["grads"] / gib),
        ("optimizer", f.optimizer / gib, b["optimizer"] / gib),
        ("activations + logits", (f.peak - f.static) / gib, (b["activations"] + b["logits"]) / gib),
        ("peak", f.peak / gib, busiest.peak / gib),
    ]


def format_trace(formula, traces: list[RankTrace]) -> str:
    lines = ["traced (stand-in accelerator, this config's worst-case micro-batches) vs formula, GiB per GPU:"]
    for t in traces:
        b = {k: v / 2**30 for k, v in t.breakdown.items()}
        lines.append(
            f"  rank {t.rank}/{t.world} (pipeline stage {t.pp_rank}): peak {t.peak / 2**30:.1f} = params "
            f"{b['params']:.1f} + grads {b['grads']:.1f} + optimizer {b['optimizer']:.1f} + activations "
            f"{b['activations']:.1f} + logits {b['logits']:.1f} + other {b['other']:.1f}; refit +"
            f"{t.refit_peak / 2**30:.2f}; {t.micro_batches} micro-batches of {t.micro_batch_tokens} tokens, "
            f"traced in {t.seconds:.0f} s")
    for row, want, got in compare(formula, traces):
        lines.append(f"  {row:<22} formula {want:7.1f}  traced {got:7.1f}  ({(want - got) / got:+.0%})")
    return "\n".join(lines)
