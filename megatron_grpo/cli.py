"""``megatron-grpo``: train, eval, plan, convert, data. Works as one process or under torchrun/srun.

    megatron-grpo train                                   # the embedded tiny CPU run
    megatron-grpo train --config configs/qwen3_4b_dapo.yaml optim.lr=2e-6 trainer.max_steps=100
    torchrun --nproc-per-node 8 -m megatron_grpo train --config configs/qwen3_4b_dapo.yaml
    megatron-grpo data prepare                            # the reference job's datasets into data/
"""

from __future__ import annotations

import argparse
import logging
import sys

from megatron_grpo.config import ConfigError, check_training, load_config
from megatron_grpo.convert.cli import add_convert_arguments, run_convert
from megatron_grpo.data import DataError
from megatron_grpo.data.prepare import add_data_arguments
from megatron_grpo.plan.estimate import add_plan_arguments, run_plan
from megatron_grpo.rollout.server import add_engine_arguments, run_engine


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="YAML config (default: the embedded tiny CPU config, megatron_grpo/assets/tiny_cpu.yaml,"
                             " also at configs/tiny_cpu.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides applied after the file, e.g. optim.lr=1e-6 parallel.tensor=2")


def _train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"trainer.run_dir={args.run_dir}"] if args.run_dir else [])
    cfg = load_config(args.config, overrides)  # config errors before the heavy imports
    check_training(cfg)
    from megatron_grpo.trainer.loop import train

    return train(cfg, cfg.trainer.run_dir)


def _eval(args: argparse.Namespace) -> int:
    from megatron_grpo.trainer.validate import run_eval

    cfg = load_config(args.config, args.overrides)
    return run_eval(cfg, ckpt=args.ckpt, hf=args.hf, out=args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="megatron-grpo", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="Python logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="run or resume GRPO training (resumes from <run-dir>/checkpoints/latest)")
    _add_config_args(train)
    train.add_argument("--run-dir", default=None, help="run directory (overrides trainer.run_dir)")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("eval", help="mean@k / pass@k / maj@k of a checkpoint on the config's eval sets")
    _add_config_args(evaluate)
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument("--ckpt", default=None, help="Megatron checkpoint (a step dir or a root with 'latest')")
    source.add_argument("--hf", default=None, help="Hugging Face model directory (e.g. an export)")
    evaluate.add_argument("--out", default=None, help="report directory (default <run_dir>/eval)")
    evaluate.set_defaults(func=_eval)

    plan = sub.add_parser("plan", help="dry-run: layout, per-GPU memory and throughput estimate")
    add_plan_arguments(plan)
    plan.set_defaults(func=run_plan)

    engine = sub.add_parser("engine", help="an engine process of a disaggregated run (connects to trainer rank 0)")
    add_engine_arguments(engine)
    engine.set_defaults(func=run_engine)

    convert = sub.add_parser("convert", help="convert checkpoints: mcore-to-hf / hf-to-mcore")
    add_convert_arguments(convert)
    convert.set_defaults(func=run_convert)

    data = sub.add_parser("data", help="data prepare: the reference datasets; data convert: your own files")
    add_data_arguments(data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ConfigError, DataError) as exc:
        print(f"megatron-grpo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
