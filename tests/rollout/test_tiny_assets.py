"""The committed tiny model/tokenizer assets: loadable, consistent, and what the generator writes."""

import filecmp
import json
import subprocess
import sys

from rollout_helpers import TINY
from transformers import AutoConfig, AutoTokenizer

TOOL = TINY.parents[2] / "tools" / "make_tiny_assets.py"


def test_tokenizer_encodes_the_demo_prompt_and_decodes_with_spaces():
    tok = AutoTokenizer.from_pretrained(TINY)
    ids = tok("3 + 5 = Answer:").input_ids
    assert tok.convert_ids_to_tokens(ids) == ["<bos>", "3", "+", "5", "=", "Answer:"]
    answer = tok.convert_tokens_to_ids("8")
    assert tok.decode([*ids, answer, tok.eos_token_id], skip_special_tokens=True) == "3 + 5 = Answer: 8"
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)


def test_config_matches_the_tokenizer_and_the_tiny_task():
    config = AutoConfig.from_pretrained(TINY)
    tok = AutoTokenizer.from_pretrained(TINY)
    assert config.architectures == ["Qwen3ForCausalLM"]
    assert config.vocab_size == len(tok) == 16
    assert (config.hidden_size, config.num_hidden_layers, config.head_dim) == (128, 2, 32)
    assert (config.num_attention_heads, config.num_key_value_heads, config.intermediate_size) == (4, 2, 384)
    assert config.tie_word_embeddings and config.eos_token_id == tok.eos_token_id


def test_generator_reproduces_the_committed_files(tmp_path):
    subprocess.run([sys.executable, str(TOOL), str(tmp_path)], check=True, capture_output=True)
    names = sorted(p.name for p in TINY.iterdir())
    assert names == sorted(p.name for p in tmp_path.iterdir())
    _, mismatch, errors = filecmp.cmpfiles(TINY, tmp_path, names, shallow=False)
    assert not mismatch and not errors, mismatch
    assert json.loads((TINY / "config.json").read_text())["vocab_size"] == 16
