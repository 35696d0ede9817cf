"""Training data: files -> ``PromptRecord``s -> tokenized ``PromptDataset`` -> ``PromptSampler`` batches.

Trainer use::

    dataset, report = load_train_dataset(cfg.data, tokenizer, cfg.rollout.max_prompt_length)
    sampler = PromptSampler.from_config(cfg.data, len(dataset), dp_rank, dp_size)
    items = dataset.select(sampler.next_batch())        # this rank's B/dp prompts
    ckpt["sampler"] = sampler.state_dict()              # and sampler.load_state_dict(...) on resume
"""

from megatron_grpo.data.dataset import (
    PromptDataset,
    PromptItem,
    build_dataset,
    load_records,
    load_train_dataset,
)
from megatron_grpo.data.dedup import Conflict, DedupResult, dedup_records, normalize_problem
from megatron_grpo.data.readers import read_records
from megatron_grpo.data.records import BadRow, DataError, LoadReport, PromptRecord
from megatron_grpo.data.sampler import PromptSampler, epoch_order, rank_slice
from megatron_grpo.data.templates import (
    BOXED_SUFFIX,
    DAPO_PREFIX,
    DAPO_SUFFIX,
    apply_template,
    encode_prompts,
    extract_problem,
    render_chat,
)

__all__ = [
    "BOXED_SUFFIX", "DAPO_PREFIX", "DAPO_SUFFIX", "BadRow", "Conflict", "DataError", "DedupResult",
    "LoadReport", "PromptDataset", "PromptItem", "PromptRecord", "PromptSampler", "apply_template",
    "build_dataset", "dedup_records", "encode_prompts", "epoch_order", "extract_problem", "load_records",
    "load_train_dataset", "normalize_problem", "rank_slice", "read_records", "render_chat",
]
