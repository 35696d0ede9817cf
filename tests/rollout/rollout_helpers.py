"""Random tiny Qwen3 models written as HF checkpoints, and a transformers reference for log-probs."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, Qwen3ForCausalLM

from megatron_grpo.config.rollout import RolloutConfig, SamplingConfig

TINY = Path(__file__).resolve().parents[2] / "megatron_grpo" / "assets" / "tiny"
EOS = 1

# (token ids, prompt length): "<bos> a + b = Answer: c" with continuations of 1 to 4 tokens.
SEQUENCES = [
    ([2, 6, 13, 8, 14, 15, 11], 6),
    ([2, 12, 13, 12, 14, 15, 11, 1], 6),
    ([2, 4, 13, 5, 14, 15, 5, 13, 7, 1], 5),
]


def engine_config(**sampling) -> RolloutConfig:
    """A small engine: 64-token context in 32-token KV blocks (so prefixes are cached), 16 MiB of KV
    cache, 1 MiB refit buckets (the model is ~1.6 MiB)."""
    train = SamplingConfig(**{"n": 4, "max_response_length": 8, **sampling})
    return RolloutConfig(train=train, val=train, max_prompt_length=48, max_model_len=64,
                         kv_cache_gb=1 / 64, kv_block_size=32, refit_bucket_mb=1)


def random_model(seed: int, tie: bool = True, init_std: float = 0.02) -> Qwen3ForCausalLM:
    """At init std 0.02 a tied model greedily repeats its last token; a larger std breaks that."""
    config = AutoConfig.from_pretrained(TINY)
    config.tie_word_embeddings = tie
    config.initializer_range = init_std
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(config).eval()


def save_model(model: Qwen3ForCausalLM, path: Path) -> Path:
    """An HF model directory with the tiny tokenizer beside the weights."""
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(TINY).save_pretrained(path)
    return path


def hf_weights(model: Qwen3ForCausalLM) -> list[tuple[str, torch.Tensor]]:
    """What a trainer sends: every state_dict entry (a tied model lists lm_head.weight too)."""
    return [(name, t.detach().clone()) for name, t in model.state_dict().items()]


@torch.no_grad()
def hf_logprobs(
    model: Qwen3ForCausalLM, seq: list[int], prompt_len: int, temperature: float = 1.0
) -> list[float]:
    logits = model(torch.tensor([seq])).logits[0].float() / temperature
    logp = torch.log_softmax(logits, dim=-1)
    return [logp[i - 1, seq[i]].item() for i in range(prompt_len, len(seq))]


@torch.no_grad()
def hf_greedy(model: Qwen3ForCausalLM, prompt: list[int], max_new: int) -> list[int]:
    seq = list(prompt)
    for _ in range(max_new):
        seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
        if seq[-1] == EOS:
            break
    return seq[len(prompt):]


def mean_abs_diff(a: list[list[float]], b: list[list[float]]) -> float:
    flat = [abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)]
    return sum(flat) / len(flat)
