"""A tiny random Qwen3 written the way users get models: ``save_pretrained`` (safetensors)."""

from __future__ import annotations

from pathlib import Path

from tests.model.tiny import hf_model, tiny_hf_config


def save_hf_dir(path: Path, tie: bool, max_shard_size: str | None = None, config: dict | None = None,
                **config_kw):
    """Returns the transformers model whose weights are in ``path`` (sharded if ``max_shard_size``); the
    tiny Qwen3 unless ``config`` is given."""
    model = hf_model(config or tiny_hf_config(tie=tie, **config_kw))
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, **kwargs)
    return model
