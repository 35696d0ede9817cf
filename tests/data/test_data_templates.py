"""Prompt templates against the exact texts of shared/data/README.md, and the chat-template encoding."""

import re

import pytest

from megatron_grpo.data import (
    BOXED_SUFFIX,
    DAPO_PREFIX,
    DAPO_SUFFIX,
    PromptRecord,
    apply_template,
    encode_prompts,
    extract_problem,
    read_records,
    render_chat,
)
from tests.shared_data import DATA as SHARED
from tests.shared_data import needs_shared, qwen3_tokenizer

pytestmark = needs_shared   # the templates are checked against the mirror README's exact texts
README = (SHARED / "README.md").read_text() if SHARED.is_dir() else ""


@pytest.fixture(scope="module")
def tokenizer():
    return qwen3_tokenizer()


def test_dapo_template_is_the_quoted_readme_block():
    section = README.split("### 2.1 DAPO prompt template")[1]
    block = re.search(r"```\n(.*?)\n```", section, re.S).group(1)
    assert DAPO_PREFIX + "{problem}" + DAPO_SUFFIX == block


def test_boxed_suffix_is_the_quoted_readme_text():
    assert f'**problem text + "{BOXED_SUFFIX}"**' in README


def _record(problem: str, prompt: str | None = None) -> PromptRecord:
    return PromptRecord(problem, prompt or problem, "1", "t", "0", 0)


def test_every_template_applies_to_a_bare_problem():
    rec = _record("What is $1+1$?", prompt="file text")
    assert apply_template(rec, "raw") == "What is $1+1$?"
    assert apply_template(rec, "as_is") == "file text"
    boxed = "What is $1+1$? Please reason step by step, and put your final answer within \\boxed{}."
    assert apply_template(rec, "boxed") == boxed
    assert apply_template(rec, "dapo").startswith("Solve the following math problem step by step.")
    assert extract_problem(apply_template(rec, "dapo")) == extract_problem(boxed) == rec.problem


def test_file_templates_round_trip_and_convert_between_files():
    full, _ = read_records(SHARED / "train" / "dapo_math_17k.parquet")
    proc, _ = read_records(SHARED / "train" / "dapo_math_17k_processed_dedup17398.parquet")
    assert all(apply_template(r, "dapo") == r.prompt != r.problem for r in full)
    assert all(apply_template(r, "boxed") == r.prompt != r.problem for r in proc)
    # the boxed rendering of the DAPO file gives the Processed file's prompts
    assert {r.prompt for r in proc} <= {apply_template(r, "boxed") for r in full}


def test_chat_rendering_matches_the_readme(tokenizer):
    content = "What is $1+1$?" + BOXED_SUFFIX
    expected = f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert render_chat(content, tokenizer, enable_thinking=False) == expected
    assert render_chat(content, tokenizer, enable_thinking=True) != expected


def test_encoding_with_and_without_chat_template(tokenizer):
    text = "Find $x$ if $2x = 4$."
    [with_chat] = encode_prompts([text], tokenizer, chat_template=True, enable_thinking=False)
    [bare] = encode_prompts([text], tokenizer, chat_template=False, enable_thinking=False)
    independent = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                                add_generation_prompt=True, enable_thinking=False)
    assert with_chat == list(independent["input_ids"])
    assert with_chat[0] == 151644 and with_chat[-4:] == [151667, 271, 151668, 271]  # <think>\n\n</think>\n\n
    assert 151644 not in bare
    assert tokenizer.decode(bare) == text
