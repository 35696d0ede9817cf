"""Megatron ``torch_dist`` checkpoint -> Hugging Face directory, in one process, tensor by tensor.

No process group and no Megatron model: ``checkpoint.reader`` reads one layer of one Megatron tensor
at a time (DCP regions), ``mapping`` turns it into HF tensors (drops vocab padding, splits QKV and
gate/up), ``ShardedWriter`` buffers at most one output shard. Peak memory is about one shard buffer
plus the largest Megatron tensor of one layer (embedding / LM head for Qwen3) plus one stored chunk.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from megatron_grpo.checkpoint.files import CheckpointError, resolve_checkpoint, verify_checkpoint
from megatron_grpo.checkpoint.reader import LAYER_PREFIX, CheckpointReader
from megatron_grpo.convert.hf_io import INDEX, HFCheckpoint, ShardedWriter
from megatron_grpo.convert.mapping import match_mcore, rules_for, split, unpad
from megatron_grpo.convert.verify import ConvertError, ExportCheck, check_hf_checkpoint
from megatron_grpo.families import ModelArch, hf_config_path, load_arch

STACKED_EXPERTS = ".mlp.experts.experts."
"""Where Megatron's dist checkpoint keeps the routed experts (SequentialMLP's and TEGroupedMLP's alike):
one key per expert weight with an expert axis after the layer axis, every expert at its global index."""
EXPORT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
_CONFIG_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
_TOKENIZER_FILES = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt",
                    "chat_template*")


@dataclass(frozen=True)
class ExportSummary:
    out: Path
    tensors: int
    parameters: int
    bytes: int
    shards: list[str]

    def __str__(self) -> str:
        return (f"wrote {self.out}: {self.tensors} tensors, {self.parameters:,} parameters, "
                f"{self.bytes / 2**30:.3f} GiB in {len(self.shards)} shard(s)")


def checkpoint_hf_tensors(reader: CheckpointReader, arch: ModelArch) -> Iterator[tuple[str, torch.Tensor]]:
    """HF-named full tensors of a checkpoint's model weights, layer by layer."""
    rules = rules_for(arch)
    keys = reader.model_keys()
    layered = [k for k in keys if k.startswith(LAYER_PREFIX)]
    for key in layered:
        if reader.shape(key)[0] != arch.num_layers:
            raise ConvertError(f"{reader.path}: '{key}' holds {reader.shape(key)[0]} layers, "
                               f"config says {arch.num_layers}")

    def convert(name: str, full: torch.Tensor):
        match = match_mcore(name, rules)
        if match.rule.export:
            tensors = [unpad(match.rule.kind, t, arch.vocab_size) for t in split(match.rule.kind, full, arch)]
            yield from zip(match.hf_names, tensors, strict=True)

    head = [k for k in keys if k.startswith("embedding.")]
    tail = [k for k in keys if k not in head and k not in layered]  # final norm, output layer
    for key in head:
        yield from convert(key, reader.read(key))
    for i in range(arch.num_layers):
        for key in layered:
            name, tensor = LAYER_PREFIX + f"{i}." + key[len(LAYER_PREFIX):], reader.read(key, layer=i)
            if STACKED_EXPERTS in name:  # [expert, ...]: one Megatron expert parameter per index
                for e, expert in enumerate(tensor):
                    yield from convert(name.replace(STACKED_EXPERTS, f".mlp.experts.local_experts.{e}."), expert)
            else:
                yield from convert(name, tensor)
    for key in tail:
        yield from convert(key, reader.read(key))


def _write_config(hf_config: str | Path, out: Path, dtype: torch.dtype | None) -> None:
    source = hf_config_path(hf_config)
    config = json.loads(source.read_text())
    if dtype is not None:
        present = [k for k in ("dtype", "torch_dtype") if k in config] or ["torch_dtype"]
        config.update({k: _CONFIG_DTYPE_NAMES[dtype] for k in present})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = source.parent / "generation_config.json"
    if generation.is_file():
        shutil.copyfile(generation, out / "generation_config.json")
    else:
        keys = ("bos_token_id", "eos_token_id", "pad_token_id")
        minimal = {k: config[k] for k in keys if config.get(k) is not None}
        (out / "generation_config.json").write_text(json.dumps(minimal, indent=2) + "\n")


def _copy_tokenizer(tokenizer: str | Path, out: Path) -> None:
    files = [f for pattern in _TOKENIZER_FILES for f in Path(tokenizer).glob(pattern) if f.is_file()]
    if not files:
        raise ConvertError(f"tokenizer directory {tokenizer}: no tokenizer files found")
    for f in files:
        shutil.copyfile(f, out / f.name)


def export_hf(ckpt: str | Path, hf_config: str | Path, out: str | Path, dtype: str | None = None,
              tokenizer: str | Path | None = None, max_shard_bytes: int = 2 << 30,
              progress: bool = True) -> ExportSummary:
    """Write ``out`` (config, generation config, tokenizer, sharded safetensors + index) from ``ckpt``
    (a step directory, or a root whose ``latest`` is used). Raises ConvertError/MappingError naming the
    tensor when the result would not be exactly the HF layout the config implies."""
    from tqdm import tqdm

    ckpt_dir = resolve_checkpoint(ckpt)
    if ckpt_dir is None:
        raise CheckpointError(f"{ckpt}: no checkpoint found (no 'latest' pointer)")
    verify_checkpoint(ckpt_dir)
    arch = load_arch(hf_config)
    out = Path(out)
    if list(out.glob("*.safetensors")) or (out / INDEX).exists():
        raise ConvertError(f"output directory {out} already holds safetensors; choose an empty directory")
    torch_dtype = EXPORT_DTYPES[dtype] if dtype else None
    check, writer = ExportCheck(arch), ShardedWriter(out, max_shard_bytes)
    stream = checkpoint_hf_tensors(CheckpointReader(ckpt_dir), arch)
    for name, tensor in tqdm(stream, total=len(check.layout), unit="tensor", disable=not progress):
        tensor = tensor if torch_dtype is None else tensor.to(torch_dtype)
        check.add(name, tensor)
        writer.add(name, tensor)
    check.finish()
    shards = writer.close()
    _write_config(hf_config, out, torch_dtype)
    if tokenizer:
        _copy_tokenizer(tokenizer, out)
    check_hf_checkpoint(HFCheckpoint(out), arch)  # re-read the index and headers as a consumer would
    return ExportSummary(out, len(check.seen), check.parameters, writer.total_bytes, shards)
