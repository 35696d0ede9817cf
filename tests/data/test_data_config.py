"""The data and eval config sections: strict keys and the checks in their validate()."""

import pytest

from megatron_grpo.config import ConfigError, DataConfig, EvalConfig
from megatron_grpo.config.loader import from_dict


def test_data_section_rejects_typos_and_bad_values():
    assert from_dict(DataConfig, {"prompt_template": "boxed", "shuffle": True}).prompt_template == "boxed"
    with pytest.raises(ConfigError, match="did you mean 'prompt_template'"):
        from_dict(DataConfig, {"prompt_templte": "boxed"})
    with pytest.raises(ConfigError, match="prompt_template: 'chat' is not one of"):
        from_dict(DataConfig, {"prompt_template": "chat"})
    with pytest.raises(ConfigError, match=r"train_files\[1\]: empty path"):
        from_dict(DataConfig, {"train_files": ["a.parquet", " "]})
    with pytest.raises(ConfigError, match="batch_prompts: must be >= 1"):
        from_dict(DataConfig, {"batch_prompts": 0})


def test_eval_section_checks_sets_and_k():
    sets = [{"name": "aime24", "path": "a.jsonl"}, {"name": "amc23", "path": "b.jsonl"}]
    assert [s.name for s in from_dict(EvalConfig, {"sets": sets, "k": 8}).sets] == ["aime24", "amc23"]
    with pytest.raises(ConfigError, match=r"duplicate set names \['aime24'\]"):
        from_dict(EvalConfig, {"sets": [sets[0], sets[0]]})
    with pytest.raises(ConfigError, match=r"sets\[0\]\.name: must be non-empty and contain no '/'"):
        from_dict(EvalConfig, {"sets": [{"name": "a/b", "path": "x"}]})
    with pytest.raises(ConfigError, match="k: must be >= 1"):
        from_dict(EvalConfig, {"k": 0})
    with pytest.raises(ConfigError, match="max_problems: must be >= 1"):
        from_dict(EvalConfig, {"max_problems": 0})
