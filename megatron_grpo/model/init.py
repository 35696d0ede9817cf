"""Layout-independent random initialisation.

Megatron's CPU initialisation draws each full weight from one RNG stream, so the values depend on the
padded vocabulary (which grows with TP) and on which layers a pipeline stage builds first. To make a
random-init run identical under every TP/PP/DP layout, the initial weights are instead defined in the HF
layout, each tensor from its own generator seeded by (seed, name), and imported like a checkpoint.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping

import torch

from megatron_grpo.families import ModelArch, family, hf_layout


class RandomHFWeights(Mapping[str, torch.Tensor]):
    """Lazy name -> tensor mapping: norms 1, biases 0, weights N(0, std), the family's residual-branch
    outputs N(0, std/sqrt(2L)) (Megatron's scaled init). Tensors are created on access, one at a time."""

    def __init__(self, arch: ModelArch, seed: int):
        self.arch, self.seed = arch, seed
        self._layout = hf_layout(arch)
        self._residual = family(arch).residual_outputs

    def __getitem__(self, name: str) -> torch.Tensor:
        shape = self._layout[name]
        if name.endswith("norm.weight"):
            return torch.ones(shape)
        if name.endswith(".bias"):
            return torch.zeros(shape)
        std = self.arch.init_std
        if name.endswith(self._residual):
            std /= math.sqrt(2.0 * self.arch.num_layers)
        digest = hashlib.blake2b(f"{self.seed}:{name}".encode(), digest_size=8).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
        return torch.randn(shape, generator=generator) * std

    def __iter__(self) -> Iterator[str]:
        return iter(self._layout)

    def __len__(self) -> int:
        return len(self._layout)
