"""Prompt templates and the chat-template encoding of one prompt.

The exact texts come from shared/data/README.md §2.1: DAPO's "Answer:" wrapping (BytedTsinghua-SIA/DAPO
README, also in every row of DAPO-Math-17k) and the OPD/JustRL "boxed" suffix of the reference run.
Files carry one of them already, so ``extract_problem`` strips a known template first: any template can
then be applied to any file, and re-applying a file's own template reproduces its prompt byte for byte.
"""

from __future__ import annotations

from typing import Literal, Protocol

from megatron_grpo.data.records import PromptRecord

TemplateName = Literal["boxed", "dapo", "raw", "as_is"]

DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'
BOXED_SUFFIX = " Please reason step by step, and put your final answer within \\boxed{}."


class ChatTokenizer(Protocol):
    """The slice of a Hugging Face tokenizer this module uses."""

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs) -> str: ...

    def __call__(self, text: list[str], **kwargs) -> dict[str, list[list[int]]]: ...

    def get_vocab(self) -> dict[str, int]: ...


def extract_problem(text: str) -> str:
    """The problem inside ``text``: the DAPO wrapping or the boxed suffix removed, else ``text``."""
    if text.startswith(DAPO_PREFIX) and text.endswith(DAPO_SUFFIX):
        return text[len(DAPO_PREFIX):len(text) - len(DAPO_SUFFIX)]
    if text.endswith(BOXED_SUFFIX):
        return text[:-len(BOXED_SUFFIX)]
    return text


def apply_template(record: PromptRecord, template: TemplateName) -> str:
    """The user-turn text for ``record`` under ``template``."""
    if template == "as_is":
        return record.prompt
    if template == "raw":
        return record.problem
    if template == "boxed":
        return record.problem + BOXED_SUFFIX
    if template == "dapo":
        return DAPO_PREFIX + record.problem + DAPO_SUFFIX
    raise ValueError(f"unknown prompt template {template!r}; expected one of boxed, dapo, raw, as_is")


def render_chat(text: str, tokenizer: ChatTokenizer, enable_thinking: bool) -> str:
    """``text`` as one user turn plus the generation prompt, as the string the model sees."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True,
        enable_thinking=enable_thinking,
    )


def encode_prompts(texts: list[str], tokenizer: ChatTokenizer, chat_template: bool,
                   enable_thinking: bool) -> list[list[int]]:
    """Token ids of each prompt. The rendered string is encoded without extra special tokens: the chat
    template already spells them out, and a base model without a chat template gets the bare text."""
    if chat_template:
        texts = [render_chat(t, tokenizer, enable_thinking) for t in texts]
    return list(tokenizer(texts, add_special_tokens=False)["input_ids"])
