"""The trainer's pre-flight checks on its inputs: each names the file or key and what was expected."""

import dataclasses

import pytest

from megatron_grpo.config import ConfigError, check_training, load_config
from megatron_grpo.families import arch_from_dict
from megatron_grpo.trainer.setup import load_tokenizer
from tests.model.tiny import tiny_hf_config


def _with_tokenizer(path) -> tuple:
    cfg = load_config(None)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, tokenizer=str(path))), arch_from_dict(
        tiny_hf_config())


def test_a_tokenizer_directory_without_its_files_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")   # a model directory, but no tokenizer in it
    with pytest.raises(ConfigError, match=rf"model.tokenizer: {tmp_path} has none of the tokenizer files "
                                          r"\(expected one of tokenizer.json, tokenizer_config.json"):
        load_tokenizer(*_with_tokenizer(tmp_path))
    with pytest.raises(ConfigError, match=rf"model.tokenizer: {tmp_path / 'nope'} is not a directory"):
        load_tokenizer(*_with_tokenizer(tmp_path / "nope"))


def test_training_needs_a_training_file():
    check_training(load_config(None))
    with pytest.raises(ConfigError, match="data.train_files: empty; training needs at least one file"):
        check_training(load_config(None, ["data.train_files=[]"]))
