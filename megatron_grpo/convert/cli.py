"""``convert`` sub-commands (``megatron-grpo convert`` and ``tools/convert_checkpoint.py``)."""

from __future__ import annotations

import argparse
import sys

from megatron_grpo.checkpoint.files import CheckpointError
from megatron_grpo.config import ConfigError
from megatron_grpo.convert.hf_io import HFCheckpointError
from megatron_grpo.convert.mapping import MappingError
from megatron_grpo.convert.verify import ConvertError

ERRORS = (CheckpointError, ConfigError, ConvertError, HFCheckpointError, MappingError)


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="direction", required=True)
    out = sub.add_parser("mcore-to-hf", help="Megatron torch_dist checkpoint -> HF directory (one process)")
    out.add_argument("--ckpt", required=True, help="checkpoint step directory, or a root (its 'latest' is used)")
    out.add_argument("--hf-config", required=True, help="HF config.json, or the directory holding it")
    out.add_argument("--out", required=True, help="output directory (must not hold safetensors yet)")
    out.add_argument("--dtype", choices=["bf16", "fp32"], default=None,
                     help="dtype of the written tensors (default: as stored in the checkpoint)")
    out.add_argument("--tokenizer", default=None, help="tokenizer directory whose files are copied into --out")
    out.add_argument("--max-shard-gb", type=float, default=2.0, help="largest safetensors shard, in GiB")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    into = sub.add_parser("hf-to-mcore", help="HF directory -> Megatron torch_dist checkpoint (TP*PP processes)")
    into.add_argument("--hf", required=True, help="HF directory: config.json + safetensors (sharded or not)")
    into.add_argument("--out", required=True, help="checkpoint root to create (gets step_0 and 'latest')")
    into.add_argument("--tp", type=int, default=1, help="tensor-parallel size to shard for")
    into.add_argument("--pp", type=int, default=1, help="pipeline-parallel size to shard for")
    into.add_argument("--dtype", choices=["bf16", "fp32"], default="fp32", help="stored parameter dtype")
    into.add_argument("--make-vocab-size-divisible-by", type=int, default=128,
                      help="vocab padding multiple (per TP rank), as in model.make_vocab_size_divisible_by")


def run_convert(args: argparse.Namespace) -> int:
    """Exit status: 0 on success, 1 with a one-line message naming the bad piece otherwise."""
    from megatron_grpo.convert.export import export_hf
    from megatron_grpo.convert.importer import import_hf

    try:
        if args.direction == "mcore-to-hf":
            summary = export_hf(args.ckpt, args.hf_config, args.out, args.dtype, args.tokenizer,
                                int(args.max_shard_gb * 2**30), progress=not args.no_progress)
            print(summary)
        else:
            path = import_hf(args.hf, args.out, args.tp, args.pp, args.dtype, args.make_vocab_size_divisible_by)
            print(f"wrote {path} (TP{args.tp} x PP{args.pp}, model only)")
    except ERRORS as exc:
        print(f"convert {args.direction}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert between HF safetensors and Megatron checkpoints.")
    add_convert_arguments(parser)
    return run_convert(parser.parse_args(argv))
