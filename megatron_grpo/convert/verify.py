"""Checks on HF weights crossing the converter: names, shapes and values against what the config implies.

Used on the way in (``hf-to-mcore`` checks the safetensors headers before starting any process) and on
the way out (``mcore-to-hf`` checks every tensor as it is written, then re-reads the directory index).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from megatron_grpo.convert.hf_io import HFCheckpoint
from megatron_grpo.convert.mapping import MappingError
from megatron_grpo.convert.weights import check_hf_names
from megatron_grpo.families import ModelArch, hf_layout


class ConvertError(RuntimeError):
    """A conversion produced or was given bad weights; the message names the tensor."""


FLOAT_DTYPES = ("F32", "BF16", "F16", "F64")  # safetensors' names


def check_hf_checkpoint(hf: HFCheckpoint, arch: ModelArch) -> None:
    """Every expected tensor present with the expected shape and a floating-point dtype, read from the
    headers only (no data)."""
    check_hf_names(set(hf), arch, str(hf.directory))
    for name, expected in hf_layout(arch).items():
        shape = hf.shape(name)
        if shape != expected:
            raise MappingError(f"{hf.directory}: tensor '{name}' has shape {shape}, expected {expected}")
        dtype = hf.dtype(name)
        if dtype not in FLOAT_DTYPES:
            raise MappingError(f"{hf.directory}: tensor '{name}' has dtype {dtype}, expected one of "
                               f"{', '.join(FLOAT_DTYPES)}")


@dataclass
class ExportCheck:
    """Streaming check of exported tensors: each expected name exactly once, right shape, finite."""

    arch: ModelArch
    layout: dict[str, tuple[int, ...]] = field(init=False)
    seen: set[str] = field(default_factory=set)
    parameters: int = 0

    def __post_init__(self):
        self.layout = hf_layout(self.arch)

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name not in self.layout:
            raise ConvertError(f"export produced unexpected tensor '{name}' for {self.arch.architecture}")
        if name in self.seen:
            raise ConvertError(f"export produced tensor '{name}' twice (checkpoint holds two sources for it)")
        if tuple(tensor.shape) != self.layout[name]:
            raise ConvertError(f"tensor '{name}' has shape {tuple(tensor.shape)}, expected {self.layout[name]}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ConvertError(f"tensor '{name}' contains NaN or Inf")
        self.seen.add(name)
        self.parameters += tensor.numel()

    def finish(self) -> None:
        missing = sorted(set(self.layout) - self.seen)
        if missing:
            raise ConvertError(f"export is missing tensor '{missing[0]}' ({len(missing)} missing in all)")
