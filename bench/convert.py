"""Conversion throughput and peak memory on a random Qwen3-0.6B (bf16, ~1.2 GB of weights), CPU.

Each measured operation runs in its own spawned process, which reports wall time and its peak RSS
(its own, or its children's for the multi-process import):

* ``safetensors_copy``: baseline, ``load_file`` + ``save_file`` of every shard (same bytes, no mapping);
* ``import_tpN``: ``hf-to-mcore`` at TP=N (N processes; peak RSS is the largest one's);
* ``export``: ``mcore-to-hf`` of the TP1 checkpoint (one process, tensor by tensor).

Usage: ``python bench/convert.py [--tp 1,2] [--dir /tmp/convert-bench]`` -> one JSON line per case.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "models" / "qwen3-0.6b-base.config.json")


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # Linux reports KiB


def write_random_hf(out: Path) -> int:
    """A random bf16 HF directory for CONFIG (weights ~N(0, 0.02), norms 1); returns bytes written."""
    from megatron_grpo.convert.hf_io import ShardedWriter
    from megatron_grpo.families import hf_layout, load_arch

    writer = ShardedWriter(out, max_shard_bytes=512 << 20)
    gen = torch.Generator().manual_seed(0)
    for name, shape in hf_layout(load_arch(CONFIG)).items():
        t = torch.ones(shape) if "norm" in name else torch.randn(shape, generator=gen) * 0.02
        writer.add(name, t.to(torch.bfloat16))
    writer.close()
    config = json.loads(Path(CONFIG).read_text())
    (out / "config.json").write_text(json.dumps(config))
    return writer.total_bytes


def _safetensors_copy(src: str, dst: str) -> None:
    from safetensors.torch import load_file, save_file

    Path(dst).mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(src).glob("*.safetensors")):
        save_file(load_file(f), str(Path(dst) / f.name), metadata={"format": "pt"})


def _import(src: str, dst: str, tp: int) -> None:
    from megatron_grpo.convert.importer import import_hf

    import_hf(src, dst, tp=tp, dtype="bf16")


def _export(ckpt: str, hf_config: str, dst: str) -> None:
    from megatron_grpo.convert.export import export_hf

    export_hf(ckpt, hf_config, dst, progress=False)


def _measured(queue, fn, args) -> None:
    start = time.perf_counter()
    fn(*args)
    queue.put((time.perf_counter() - start, _peak_rss_mb()))


def measure(case: str, nbytes: int, fn, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measured, args=(queue, fn, args))
    proc.start()
    seconds, rss = queue.get(timeout=1800)
    proc.join()
    row = {"case": case, "seconds": round(seconds, 2), "gb_per_s": round(nbytes / seconds / 1e9, 3),
           "peak_rss_mb": round(rss), "bytes": nbytes}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tp", default="1,2", help="comma-separated TP sizes to import at")
    parser.add_argument("--dir", default="/tmp/convert-bench", help="scratch directory (deleted first)")
    args = parser.parse_args()
    work = Path(args.dir)
    shutil.rmtree(work, ignore_errors=True)
    hf = work / "hf"
    nbytes = write_random_hf(hf)
    measure("safetensors_copy", nbytes, _safetensors_copy, str(hf), str(work / "copy"))
    for tp in (int(x) for x in args.tp.split(",")):
        measure(f"import_tp{tp}", nbytes, _import, str(hf), str(work / f"mcore_tp{tp}"), tp)
    measure("export", nbytes, _export, str(work / "mcore_tp1"), str(hf), str(work / "export"))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
