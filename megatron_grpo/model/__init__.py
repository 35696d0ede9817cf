"""Megatron-Core policy built from a Hugging Face config (``model.policy.MegatronPolicy``)."""

from megatron_grpo.model.arch import ModelArch, arch_from_dict, load_arch

__all__ = ["ModelArch", "arch_from_dict", "load_arch"]
