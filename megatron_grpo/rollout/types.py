"""The rollout seam: what the trainer and evaluator need from a generation engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from megatron_grpo.config.rollout import SamplingConfig


@dataclass
class Sample:
    """One generated response."""

    token_ids: list[int]          # [T] response tokens (prompt excluded)
    logprobs: list[float]         # [T] sampler log-prob of each response token
    text: str                     # detokenized response, special tokens skipped
    finish_reason: Literal["stop", "length"]
    version: int = 0              # policy version (trainer step) of the weights that produced it
    routed_experts: torch.Tensor | None = None  # [P + T - 1, layers, k] int16, MoE routing replay only: the
    # experts the engine routed each prompt and response token to (the last token is sampled, never routed)


class RolloutEngine(Protocol):
    """A generation engine holding a copy of the policy weights (vLLM here; anything with these methods)."""

    def generate(self, prompts: list[list[int]], sampling: SamplingConfig, seed: int,
                 first_index: int = 0, routing: bool = False) -> list[list[Sample]]:
        """``sampling.n`` samples per prompt; result[i][j] is sample j of prompt i, seeded by
        (seed, first_index + i) so a batch split over several engines samples as one engine would.
        ``routing`` (MoE): every sample carries ``routed_experts``."""
        ...

    def score(self, sequences: list[list[int]], prompt_lens: list[int]) -> list[list[float]]:
        """Log-probs the engine assigns to the given tokens after each prompt (refit probe)."""
        ...

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int = 0) -> None:
        """Replace all weights from HF-named full tensors, which are policy ``version`` (stamped on the
        samples generated from them); the prefix cache is invalidated."""
        ...

    def check_manifest(self, manifest: Mapping[str, tuple[tuple[int, ...], torch.dtype]]) -> None:
        """Reject a whole update (name -> (shape, dtype)) before any tensor is sent."""
        ...

    def weight_checksums(self) -> dict[str, float] | None:
        """HF name -> ``weight_specs.checksum`` of that tensor as the engine holds it (refit check); None
        if this engine cannot read its weights back."""
        ...

    def sleep(self, level: int = 1) -> None:
        """Free accelerator memory while the trainer runs (level 2: discard the weights too)."""
        ...

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Re-allocate what ``sleep`` freed: ``["weights"]`` before a refit, then ``["kv_cache"]``."""
        ...

    def close(self) -> None:
        """Release the engine (before the process groups go away)."""
        ...


def send_in_buckets(named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int,
                    load: Callable[[list[tuple[str, torch.Tensor]]], None]) -> None:
    """``load`` each run of at most ``bucket_bytes`` of a weight stream (a bucket exceeds it only when one
    tensor alone does), dropping it before the next fills: an engine holds one bucket at a time."""
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named_tensors:
        if bucket and size + tensor.nbytes > bucket_bytes:
            load(bucket)
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += tensor.nbytes
    if bucket:
        load(bucket)


def chunk(n: int, parts: int, index: int) -> range:
    """Contiguous, near-equal split of range(n) into ``parts``; the ``index``-th part."""
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return range(start, start + base + (index < extra))
