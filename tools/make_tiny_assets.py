"""Write the tiny demo model config and tokenizer to ``megatron_grpo/assets/tiny/``.

The demo task is ``<bos> 3 + 5 = Answer:`` -> one digit token, ``(a + b) mod 10``. The vocabulary is
closed (16 words, no unknown token: anything else fails to encode, loudly), so the model's
``vocab_size`` equals the tokenizer size and no sampled id is ever undecodable. Shapes follow
TINY_TASK.md; ``head_dim`` is 32 because vLLM's CPU attention rejects 16.

Usage: ``python tools/make_tiny_assets.py [out_dir]``; the generated files are committed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3Config

PAD, EOS, BOS = "<pad>", "<eos>", "<bos>"
WORDS = [PAD, EOS, BOS, *(str(d) for d in range(10)), "+", "=", "Answer:"]
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "megatron_grpo" / "assets" / "tiny"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Whitespace-split word-level tokenizer that prepends ``<bos>`` and decodes by joining with spaces."""
    vocab = {word: i for i, word in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    # The WordPiece decoder without a prefix joins words with single spaces (as the word-level model needs).
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.add_special_tokens([PAD, EOS, BOS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=64
    )


def build_config(vocab_size: int, tokenizer: PreTrainedTokenizerFast) -> Qwen3Config:
    """The tiny Qwen3 of TINY_TASK.md (tied embeddings, init std 0.02)."""
    return Qwen3Config(
        architectures=["Qwen3ForCausalLM"],
        vocab_size=vocab_size,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        intermediate_size=384,
        tie_word_embeddings=True,
        max_position_embeddings=64,
        initializer_range=0.02,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(out)
    config = build_config(len(tokenizer), tokenizer)
    config.save_pretrained(out)
    gen = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    gen.save_pretrained(out)
    print(json.dumps({"out": str(out), "vocab_size": config.vocab_size}))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
