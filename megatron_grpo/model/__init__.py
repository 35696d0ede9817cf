"""Megatron-Core policy built from a model family (``model.policy.MegatronPolicy``)."""
