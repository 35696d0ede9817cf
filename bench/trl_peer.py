"""The peer of bench/grpo_step.py: the same GRPO step shape through TRL's ``GRPOTrainer``, run with the
Python of a separate venv that has ``trl`` (never ``trl[vllm]``: TRL generates with transformers here).

    /path/to/trl-venv/bin/python bench/trl_peer.py --config MODEL_DIR/config.json --new-tokens 32 --steps 3

Same random Qwen3 from the same config, the tiny tokenizer, 8 prompts x 8 generations of the tiny task,
``max_completion_length`` new tokens, the tiny task's reward, one optimizer step per batch, no KL. Prints one
JSON line: per-step seconds (step 1 apart, as warm-up) measured by a trainer callback.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "megatron_grpo" / "assets" / "tiny"
TASK = ROOT / "megatron_grpo" / "assets" / "tiny_task" / "train.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="HF config.json of the model (random weights)")
    parser.add_argument("--new-tokens", type=int, required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--out", required=True, help="scratch directory for TRL's output_dir")
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(Path(args.config).parent), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(TINY)
    tokenizer.padding_side = "left"
    rows = [json.loads(line) for line in TASK.read_text().splitlines()][: args.prompts * args.steps]
    data = Dataset.from_list([{"prompt": r["problem"], "answer": r["answer"]} for r in rows])

    def reward(completions, answer, **_):
        return [float(c.split()[:1] == [a]) for c, a in zip(completions, answer, strict=True)]

    starts, seconds = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            starts.append(time.perf_counter())

        def on_step_end(self, *_, **__):
            seconds.append(time.perf_counter() - starts[-1])

    config = GRPOConfig(
        output_dir=args.out, max_steps=args.steps, per_device_train_batch_size=args.prompts * args.generations,
        num_generations=args.generations, max_completion_length=args.new_tokens, learning_rate=1e-3, beta=0.0,
        temperature=1.0, use_vllm=False, use_cpu=True, bf16=False, report_to=[], logging_steps=1, save_strategy="no",
        shuffle_dataset=False, seed=0, dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=data,
                          processing_class=tokenizer, callbacks=[Timer()])
    trainer.train()
    later = seconds[1:] or seconds
    print(json.dumps({"peer": "trl", "trl_version": __import__("trl").__version__, "steps": len(seconds),
                      "first_step_s": round(seconds[0], 3), "step_s": round(statistics.fmean(later), 4)}))


if __name__ == "__main__":
    main()
