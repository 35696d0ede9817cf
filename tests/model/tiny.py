"""Tiny Qwen3 shapes and reference weights shared by the model/convert/refit tests."""

from __future__ import annotations

import torch

from megatron_grpo.config import ModelConfig, OptimizerConfig, ParallelConfig


def tiny_hf_config(tie: bool = True, layers: int = 4, vocab: int = 250, head_dim: int = 16) -> dict:
    """A Qwen3 config small enough for multi-process CPU tests; vocab 250 exercises vocab padding."""
    return {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 64,
        "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": head_dim,
        "intermediate_size": 128, "vocab_size": vocab, "max_position_embeddings": 128, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "tie_word_embeddings": tie, "hidden_act": "silu", "initializer_range": 0.02,
        "attention_bias": False, "torch_dtype": "float32",
    }


def hf_model(config: dict, seed: int = 0):
    """transformers' Qwen3ForCausalLM with random fp32 weights: the reference for parity tests."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(Qwen3Config(**config)).eval()
    with torch.no_grad():  # norms start at 1.0; perturb them so a mis-mapped norm cannot hide
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def hf_state_dict(model, tie: bool) -> dict[str, torch.Tensor]:
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    if tie:
        sd.pop("lm_head.weight", None)
    return sd


def model_cfg(**kw) -> ModelConfig:
    return ModelConfig(hf_config="<inline>", transformer_impl="local", **kw)


def parallel_cfg(**kw) -> ParallelConfig:
    return ParallelConfig(**kw)


def smooth_adam(lr: float = 0.5) -> OptimizerConfig:
    """Adam with eps=1 >> |grad|: the update is ~lr * grad, a smooth function of the gradient, so equal
    updates prove equal gradients (plain Adam's first step is ~lr * sign(grad), which hides them)."""
    return OptimizerConfig(lr=lr, adam_eps=1.0, weight_decay=0.0, grad_clip=0.0)
