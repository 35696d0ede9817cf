"""Read single tensors (or one layer of a layer-stacked tensor) out of a ``torch_dist`` checkpoint.

No process group, no model, no Megatron: torch DCP's ``FileSystemReader`` plus a load planner that
asks for one region. Megatron stores transformer-layer weights under one key with a leading layer
axis (``decoder.layers.mlp.linear_fc1.weight`` of shape ``[num_layers, ...]``), and every layer of
every TP rank as its own chunk, so reading layer ``i`` touches only that layer's chunks.
Peak memory of a read: the requested region plus one stored chunk (a TP shard of it).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.planner import LoadPlan
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

from megatron_grpo.checkpoint.files import CheckpointError

LAYER_PREFIX = "decoder.layers."
_OPTIMIZER = re.compile(r"^(chained_\d+\.)?optimizer\.")


class _RegionPlanner(DefaultLoadPlanner):
    """Reads the region ``offsets + buffer.shape`` of one checkpoint tensor into ``buffer``."""

    def __init__(self, key: str, offsets: tuple[int, ...], buffer: torch.Tensor):
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self.key, self.offsets, self.buffer = key, offsets, buffer

    def create_local_plan(self) -> LoadPlan:
        chunk = ChunkStorageMetadata(offsets=torch.Size(self.offsets), sizes=self.buffer.shape)
        return LoadPlan(create_read_items_for_chunk_list(self.key, self.metadata.state_dict_metadata[self.key],
                                                         [chunk]))

    def lookup_tensor(self, index) -> torch.Tensor:
        return self.buffer


class _CachedReader(FileSystemReader):
    """DCP reads ``.metadata`` on every load; parse it once per checkpoint."""

    def __init__(self, path: str):
        super().__init__(path)
        self._metadata: Metadata | None = None

    def read_metadata(self, *args, **kwargs) -> Metadata:
        if self._metadata is None:
            self._metadata = super().read_metadata(*args, **kwargs)
        return self._metadata


class CheckpointReader:
    """Tensor-by-tensor access to the model weights of a Megatron ``torch_dist`` checkpoint."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._reader = _CachedReader(str(self.path))
        try:
            self._tensors = {k: v for k, v in self._reader.read_metadata().state_dict_metadata.items()
                             if isinstance(v, TensorStorageMetadata)}
        except Exception as exc:
            raise CheckpointError(f"checkpoint {self.path}: unreadable .metadata: {exc}") from exc

    def model_keys(self) -> list[str]:
        """Model weight keys (optimizer state and TE ``_extra_state`` blobs excluded), in stored order.
        With expert parallelism the optimizer is Megatron's chained one: its keys start ``chained_<n>.``."""
        return [k for k in self._tensors if not _OPTIMIZER.match(k) and "_extra_state" not in k]

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._tensors[key].size)

    def dtype(self, key: str) -> torch.dtype:
        return self._tensors[key].properties.dtype

    def read(self, key: str, layer: int | None = None) -> torch.Tensor:
        """The whole tensor, or layer ``layer`` of a layer-stacked one (leading axis dropped)."""
        shape = self.shape(key)
        offsets = (0,) * len(shape)
        if layer is not None:
            shape, offsets = (1, *shape[1:]), (layer, *offsets[1:])
        buffer = torch.empty(shape, dtype=self.dtype(key))
        try:
            with warnings.catch_warnings():  # "torch.distributed is ... uninitialized": intended here
                warnings.simplefilter("ignore", UserWarning)
                dcp.load({}, storage_reader=self._reader, planner=_RegionPlanner(key, offsets, buffer), no_dist=True)
        except Exception as exc:
            raise CheckpointError(f"checkpoint {self.path}: cannot read '{key}' (layer {layer}): {exc}") from exc
        return buffer[0] if layer is not None else buffer
