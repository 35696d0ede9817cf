"""megatron_grpo: GRPO on Megatron-Core policies with vLLM rollouts."""

__version__ = "0.1.0"
