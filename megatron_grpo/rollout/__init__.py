"""Rollout engines: ``types`` holds the protocol the trainer codes against; ``vllm_engine`` (imported
explicitly, it pulls in vLLM) implements it; ``weight_specs`` checks weight updates without vLLM."""
