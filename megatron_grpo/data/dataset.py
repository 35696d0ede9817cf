"""Tokenized prompt datasets: records -> template -> chat template -> token ids, too-long prompts dropped."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from megatron_grpo.config.data import DataConfig
from megatron_grpo.data.readers import read_records
from megatron_grpo.data.records import DataError, LoadReport, PromptRecord
from megatron_grpo.data.templates import ChatTokenizer, apply_template, encode_prompts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptItem:
    """One prompt ready for the rollout engine."""

    record: PromptRecord
    text: str               # user-turn text after the prompt template, before the chat template
    prompt_ids: list[int]   # [P] token ids given to the engine


@dataclass(frozen=True)
class PromptDataset:
    """Prompts in a fixed order; the sampler hands out positions into it."""

    items: list[PromptItem]  # [N]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> PromptItem:
        return self.items[i]

    def select(self, indices: list[int]) -> list[PromptItem]:
        return [self.items[i] for i in indices]


def build_dataset(records: list[PromptRecord], tokenizer: ChatTokenizer, cfg: DataConfig,
                  max_prompt_length: int | None = None) -> tuple[PromptDataset, int]:
    """Render and tokenize ``records`` with the template/chat settings of ``cfg``; prompts longer than
    ``max_prompt_length`` tokens are dropped (verl's filter_overlong_prompts). Returns the dataset and
    how many were dropped."""
    texts = [apply_template(r, cfg.prompt_template) for r in records]
    # A text longer than max_prompt_length of the vocabulary's longest tokens cannot fit: it is dropped
    # untokenized (a 10 MB prompt would take the tokenizer seconds).
    limit = None if max_prompt_length is None else max_prompt_length * max(map(len, tokenizer.get_vocab()))
    kept = [(r, t) for r, t in zip(records, texts, strict=True) if limit is None or len(t) <= limit]
    ids = encode_prompts([t for _, t in kept], tokenizer, cfg.chat_template, cfg.enable_thinking)
    items = [
        PromptItem(r, t, p) for (r, t), p in zip(kept, ids, strict=True)
        if max_prompt_length is None or len(p) <= max_prompt_length
    ]
    return PromptDataset(items), len(records) - len(items)


def load_records(files: list[str], cfg: DataConfig, report: LoadReport) -> list[PromptRecord]:
    """Records of all ``files`` in order; bad rows handled per ``cfg.on_bad_rows``, counted in ``report``."""
    records: list[PromptRecord] = []
    for f in files:
        recs, bad = read_records(Path(f), cfg.on_bad_rows)
        records += recs
        report.files.append(str(f))
        report.rows_read += len(recs) + len(bad)
        report.bad_rows += bad
    return records


def load_train_dataset(cfg: DataConfig, tokenizer: ChatTokenizer,
                       max_prompt_length: int | None) -> tuple[PromptDataset, LoadReport]:
    """Training prompts of ``cfg.train_files``; pass ``rollout.max_prompt_length``. The report is logged."""
    if not cfg.train_files:
        raise DataError("data.train_files: no training files configured")
    report = LoadReport(max_prompt_length=max_prompt_length)
    records = load_records(cfg.train_files, cfg, report)
    dataset, report.too_long = build_dataset(records, tokenizer, cfg, max_prompt_length)
    report.kept = len(dataset)
    report.longest_prompt = max((len(it.prompt_ids) for it in dataset.items), default=0)
    if not len(dataset):
        raise DataError(f"no usable training prompts left: {report.summary()}")
    log.info(report.summary())
    return dataset, report
