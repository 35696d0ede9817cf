"""Hugging Face safetensors directories: a lazy tensor reader and a sharded writer.

The reader never loads more than the tensor asked for; the writer holds at most one shard buffer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

INDEX = "model.safetensors.index.json"


class HFCheckpointError(ValueError):
    """A safetensors directory is incomplete or inconsistent; the message names the file/tensor."""


class HFCheckpoint(Mapping[str, torch.Tensor]):
    """Read-only mapping name -> tensor over ``model.safetensors`` or a sharded index."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        index = self.directory / INDEX
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map")
            if not isinstance(weight_map, dict):
                raise HFCheckpointError(f"{index}: no 'weight_map'")
            self._files = {name: self.directory / f for name, f in weight_map.items()}
        else:
            files = sorted(self.directory.glob("*.safetensors"))
            if not files:
                raise HFCheckpointError(f"{self.directory}: no *.safetensors files and no {INDEX}")
            self._files = {}
            for f in files:
                with safe_open(f, framework="pt") as handle:
                    self._files.update({k: f for k in handle.keys()})
        for name, f in self._files.items():
            if not f.is_file():
                raise HFCheckpointError(f"{self.directory}: shard {f.name} (holding '{name}') is missing")

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._files:
            raise KeyError(name)
        try:
            with safe_open(self._files[name], framework="pt") as handle:
                return handle.get_tensor(name)
        except Exception as exc:  # truncated or corrupt shard
            raise HFCheckpointError(f"{self._files[name]}: cannot read tensor '{name}': {exc}") from exc

    def shape(self, name: str) -> tuple[int, ...]:
        with safe_open(self._files[name], framework="pt") as handle:
            return tuple(handle.get_slice(name).get_shape())

    def dtype(self, name: str) -> str:
        """The tensor's safetensors dtype (``F32``, ``BF16``, ``I64``...), from the header alone."""
        with safe_open(self._files[name], framework="pt") as handle:
            return handle.get_slice(name).get_dtype()

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


class ShardedWriter:
    """Writes tensors into ``model-0000k-of-0000n.safetensors`` shards plus the index."""

    def __init__(self, directory: str | Path, max_shard_bytes: int = 4 << 30):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_shard_bytes = max_shard_bytes
        self._buffer: dict[str, torch.Tensor] = {}
        self._buffer_bytes = 0
        self._shards: list[list[str]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self._buffer and self._buffer_bytes + size > self.max_shard_bytes:
            self._flush()
        self._buffer[name] = tensor.contiguous()
        self._buffer_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        if not self._buffer:
            return
        save_file(self._buffer, str(self.directory / f"shard-{len(self._shards):05d}.tmp"),
                  metadata={"format": "pt"})
        self._shards.append(list(self._buffer))
        self._buffer, self._buffer_bytes = {}, 0

    def close(self) -> list[str]:
        """Name shards ``model-0000k-of-0000n`` and write the index; returns the shard file names."""
        self._flush()
        n = len(self._shards)
        names, weight_map = [], {}
        for k, tensors in enumerate(self._shards):
            final = "model.safetensors" if n == 1 else f"model-{k + 1:05d}-of-{n:05d}.safetensors"
            (self.directory / f"shard-{k:05d}.tmp").rename(self.directory / final)
            names.append(final)
            weight_map.update({t: final for t in tensors})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.directory / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return names
