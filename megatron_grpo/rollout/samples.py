"""Generated samples as rows a person reads while the run goes (``samples.jsonl``, TensorBoard text):
the first response to each of the first k prompts of a batch, with what the grader made of it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from megatron_grpo.config import RewardConfig
from megatron_grpo.data import PromptItem
from megatron_grpo.reward.extract import extract_answer
from megatron_grpo.rollout.types import Sample

SAMPLE_FIELDS = ("step", "kind", "data_source", "index", "prompt", "response", "ground_truth", "answer", "reward",
                 "length", "finish_reason")


def sample_rows(kind: str, items: Sequence[PromptItem], samples: Sequence[Sequence[Sample]],
                rewards: Sequence[float], k: int, answer: Callable[[str], str | None]) -> list[dict]:
    """Rows for the first ``k`` prompts; ``rewards`` holds one value per sample, prompt-major (n per prompt),
    ``answer`` extracts the final answer as the grader of this ``kind`` does. The logger adds the step."""
    n = len(samples[0]) if samples else 0
    rows = []
    for i, (item, group) in enumerate(zip(items[:k], samples[:k], strict=True)):
        first = group[0]
        rows.append({
            "kind": kind, "data_source": item.record.data_source, "index": item.record.index,
            "prompt": item.text, "response": first.text, "ground_truth": item.record.ground_truth,
            "answer": answer(first.text), "reward": float(rewards[i * n]), "length": len(first.token_ids),
            "finish_reason": first.finish_reason,
        })
    return rows


def answer_extractor(cfg: RewardConfig, mode: str) -> Callable[[str], str | None]:
    """The final answer of a response as the math grader reads it in ``mode`` (as written, not normalized)."""
    return partial(extract_answer, mode=mode, fallback=cfg.fallback, tail_chars=cfg.tail_chars)


def rows_markdown(rows: list[dict]) -> str:
    """TensorBoard's text tab renders markdown: one section per row, the texts in code blocks."""
    parts = []
    for r in rows:
        parts.append(f"**{r['kind']} {r['data_source']} #{r['index']}**: reward {r['reward']:g}, answer "
                     f"`{r['answer']}` (truth `{r['ground_truth']}`), {r['length']} tokens, {r['finish_reason']}\n\n"
                     f"```\n{r['prompt']}\n```\n\n```\n{r['response']}\n```")
    return "\n\n---\n\n".join(parts)
