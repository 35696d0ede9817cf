"""Deterministic, resumable prompt sampler sharded over data-parallel ranks.

Epoch ``e`` visits the prompts in ``epoch_order(N, seed, e, shuffle)``: file order without shuffle (the
reference), else a permutation drawn from a generator seeded with ``(seed, e)`` alone. Step ``s`` of the
epoch takes the global batch ``order[s*B:(s+1)*B]``; rank ``r`` of ``dp`` gets its contiguous slice of
``B/dp`` prompts, so ranks are disjoint and their concatenation in rank order is the global batch.

Drop-last: an epoch has ``N // B`` steps; the ``N % B`` prompts at the end of the epoch's order are not
used in that epoch (without shuffle that is always the same file tail).

The position is ``{"epoch", "step"}`` (the next step to run) plus a fingerprint of the data and batch
settings. Orders depend on neither rank nor dp size, so a resumed run sees exactly the prompts the
uninterrupted run would have seen, even after a change of dp size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from megatron_grpo.config.data import DataConfig


def epoch_order(num_prompts: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The visiting order of one epoch: a pure function of its arguments."""
    if not shuffle:
        return list(range(num_prompts))
    return np.random.default_rng([seed, epoch]).permutation(num_prompts).tolist()


def rank_slice(batch: list[int], dp_rank: int, dp_size: int) -> list[int]:
    """This rank's contiguous share of a global batch."""
    per_rank = len(batch) // dp_size
    return batch[dp_rank * per_rank:(dp_rank + 1) * per_rank]


@dataclass
class PromptSampler:
    """Hands each rank its prompt indices step after step; ``state_dict`` goes into the checkpoint."""

    num_prompts: int        # N, dataset size
    batch_prompts: int      # B, prompts per step over all ranks
    dp_rank: int = 0
    dp_size: int = 1
    shuffle: bool = False
    seed: int = 0
    epoch: int = 0          # epoch of the next batch
    step: int = 0           # step-in-epoch of the next batch

    def __post_init__(self) -> None:
        if self.batch_prompts % self.dp_size:
            raise ValueError(f"batch_prompts {self.batch_prompts} is not divisible by dp size {self.dp_size}")
        if not 0 <= self.dp_rank < self.dp_size:
            raise ValueError(f"dp_rank {self.dp_rank} outside [0, {self.dp_size})")
        if self.steps_per_epoch < 1:
            raise ValueError(f"{self.num_prompts} prompts do not fill one batch of {self.batch_prompts}")
        self._order: list[int] | None = None

    @classmethod
    def from_config(cls, cfg: DataConfig, num_prompts: int, dp_rank: int = 0,
                    dp_size: int = 1) -> PromptSampler:
        return cls(num_prompts, cfg.batch_prompts, dp_rank, dp_size, cfg.shuffle, cfg.seed)

    @property
    def steps_per_epoch(self) -> int:
        return self.num_prompts // self.batch_prompts

    def global_batch(self) -> list[int]:
        """All ranks' prompt indices of the next step, in rank order (does not advance)."""
        if self._order is None:
            self._order = epoch_order(self.num_prompts, self.seed, self.epoch, self.shuffle)
        start = self.step * self.batch_prompts
        return self._order[start:start + self.batch_prompts]

    def next_batch(self) -> list[int]:
        """This rank's ``B/dp`` prompt indices for the next step; advances the position."""
        batch = rank_slice(self.global_batch(), self.dp_rank, self.dp_size)
        self.step += 1
        if self.step == self.steps_per_epoch:
            self.epoch, self.step, self._order = self.epoch + 1, 0, None
        return batch

    def _fingerprint(self) -> dict[str, int | bool]:
        return {"num_prompts": self.num_prompts, "batch_prompts": self.batch_prompts,
                "shuffle": self.shuffle, "seed": self.seed}

    def state_dict(self) -> dict[str, int | bool]:
        return {"epoch": self.epoch, "step": self.step, **self._fingerprint()}

    def load_state_dict(self, state: dict[str, int | bool]) -> None:
        """Restore a position; refuses one saved with other data/batch settings (the order would differ)."""
        saved = {k: state.get(k) for k in self._fingerprint()}
        if saved != self._fingerprint():
            raise ValueError(f"sampler state was saved with {saved}, this run has {self._fingerprint()}")
        if not 0 <= int(state["step"]) < self.steps_per_epoch or int(state["epoch"]) < 0:
            raise ValueError(f"sampler state position out of range: {state}")
        self.epoch, self.step, self._order = int(state["epoch"]), int(state["step"]), None
