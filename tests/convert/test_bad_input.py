"""Bad HF input is rejected before any process starts, with the offending tensor or field named."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from megatron_grpo.config import ConfigError
from megatron_grpo.convert.cli import main
from megatron_grpo.convert.hf_io import HFCheckpointError
from megatron_grpo.convert.importer import import_hf
from megatron_grpo.convert.mapping import MappingError
from megatron_grpo.convert.verify import ConvertError, ExportCheck
from megatron_grpo.families import arch_from_dict
from tests.convert.hfdir import save_hf_dir
from tests.model.tiny import tiny_hf_config


@pytest.fixture()
def hf_dir(tmp_path):
    save_hf_dir(tmp_path / "hf", tie=False)
    return tmp_path / "hf"


def _edit_weights(hf_dir, fn):
    file = hf_dir / "model.safetensors"
    tensors = load_file(file)
    fn(tensors)
    save_file(tensors, file, metadata={"format": "pt"})


def test_missing_tensor_is_named(hf_dir, tmp_path):
    _edit_weights(hf_dir, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(MappingError, match=r"missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight'"):
        import_hf(hf_dir, tmp_path / "out", tp=2)
    assert not (tmp_path / "out").exists()


def test_wrong_shape_is_named(hf_dir, tmp_path):
    _edit_weights(hf_dir, lambda t: t.update({"model.layers.0.self_attn.k_proj.weight": torch.zeros(16, 64)}))
    with pytest.raises(MappingError, match=r"'model\.layers\.0\.self_attn\.k_proj\.weight' has shape \(16, 64\), "
                                           r"expected \(32, 64\)"):
        import_hf(hf_dir, tmp_path / "out")


def test_wrong_dtype_is_named(hf_dir, tmp_path):
    _edit_weights(hf_dir, lambda t: t.update({"model.norm.weight": t["model.norm.weight"].to(torch.int32)}))
    with pytest.raises(MappingError, match=r"'model\.norm\.weight' has dtype I32, expected one of F32, BF16"):
        import_hf(hf_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_shard_is_named(tmp_path):
    save_hf_dir(tmp_path / "hf", tie=False, max_shard_size="100KB")
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (tmp_path / "hf" / shard).unlink()
    with pytest.raises(HFCheckpointError, match=rf"shard {shard} \(holding '.+'\) is missing"):
        import_hf(tmp_path / "hf", tmp_path / "out")


def test_unknown_architecture_is_named(hf_dir, tmp_path, capsys):
    config = json.loads((hf_dir / "config.json").read_text())
    config["architectures"] = ["LlamaForCausalLM"]
    (hf_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="'LlamaForCausalLM' is not supported"):
        import_hf(hf_dir, tmp_path / "out")
    assert main(["hf-to-mcore", "--hf", str(hf_dir), "--out", str(tmp_path / "out")]) == 1
    assert "LlamaForCausalLM" in capsys.readouterr().err


def test_export_check_rejects_nan_duplicate_missing_and_shape():
    arch = arch_from_dict(tiny_hf_config(tie=True, layers=1))
    check = ExportCheck(arch)
    check.add("model.norm.weight", torch.ones(64))
    with pytest.raises(ConvertError, match="'model.norm.weight' twice"):
        check.add("model.norm.weight", torch.ones(64))
    with pytest.raises(ConvertError, match="'model.layers.0.input_layernorm.weight' contains NaN"):
        check.add("model.layers.0.input_layernorm.weight", torch.tensor([float("nan")] * 64))
    with pytest.raises(ConvertError, match=r"has shape \(63,\), expected \(64,\)"):
        check.add("model.layers.0.post_attention_layernorm.weight", torch.ones(63))
    with pytest.raises(ConvertError, match="unexpected tensor 'lm_head.weight'"):
        check.add("lm_head.weight", torch.ones(250, 64))  # tied: no lm_head in the export
    with pytest.raises(ConvertError, match="missing tensor 'model.embed_tokens.weight'"):
        check.finish()


def test_cli_help_documents_every_option(capsys):
    for direction in ("mcore-to-hf", "hf-to-mcore"):
        with pytest.raises(SystemExit):
            main([direction, "--help"])
        text = capsys.readouterr().out
        for option in ("--out", "--dtype"):
            assert option in text
