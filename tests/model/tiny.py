"""Tiny shapes of each model family and reference weights shared by the model/convert/refit tests."""

from __future__ import annotations

from pathlib import Path

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


def tiny_moe_config(tie: bool = False, layers: int = 2, experts: int = 4, topk: int = 2, **kw) -> dict:
    """A Qwen3-MoE config: Qwen3's tiny attention, ``experts`` routed SwiGLU experts per layer."""
    config = tiny_hf_config(tie=tie, layers=layers, **kw)
    config.update(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", num_experts=experts,
                  num_experts_per_tok=topk, moe_intermediate_size=32, norm_topk_prob=True, decoder_sparse_step=1,
                  mlp_only_layers=[], router_aux_loss_coef=0.0)
    return config


def tiny_qwen2_config(tie: bool = True, layers: int = 2, **kw) -> dict:
    """A Qwen2 / Qwen2.5 config (biases on q, k, v; no qk-norm)."""
    config = tiny_hf_config(tie=tie, layers=layers, **kw)
    config.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2")
    return config


def hf_model(config: dict, seed: int = 0):
    """transformers' model of ``config["model_type"]`` with random fp32 weights: the reference for parity
    tests."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    fields = {k: v for k, v in config.items() if k != "model_type"}
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(config["model_type"], **fields)).eval()
    with torch.no_grad():  # norms start at 1.0, biases at 0: perturb them so a mis-mapped one cannot hide
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def hf_state_dict(model, tie: bool) -> dict[str, torch.Tensor]:
    """The tensors as a checkpoint holds them (``save_pretrained``): transformers keeps some fused in
    memory that it writes split (Qwen3-MoE's experts)."""
    import tempfile

    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        sd = {k: v for f in sorted(Path(tmp).glob("*.safetensors")) for k, v in load_file(f).items()}
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
