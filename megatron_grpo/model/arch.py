"""Model architecture read from a Hugging Face ``config.json``.

The table ``SUPPORTED`` is keyed by the exact ``architectures[0]``; anything else is rejected with the
field that disqualifies it, so an MoE or sliding-window checkpoint never trains silently as dense.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megatron_grpo.config import ConfigError


@dataclass(frozen=True)
class ModelArch:
    """Architecture-neutral shape of a dense decoder (what Megatron and the weight mapping need)."""

    architecture: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_query_groups: int
    head_dim: int
    ffn_hidden_size: int
    vocab_size: int
    max_position_embeddings: int
    rope_theta: float
    norm_eps: float
    tie_word_embeddings: bool
    qk_layernorm: bool
    init_std: float


_QWEN3_REQUIRED = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
    "vocab_size", "max_position_embeddings", "rms_norm_eps",
)


def _qwen3(cfg: dict[str, Any], where: str) -> ModelArch:
    missing = [k for k in _QWEN3_REQUIRED if cfg.get(k) is None]
    if missing:
        raise ConfigError(f"{where}: missing required field '{missing[0]}' for Qwen3ForCausalLM")
    rope = cfg.get("rope_parameters") or {}  # transformers >= 5 nests rope_theta/rope_type here
    unsupported = {
        "num_experts": bool(cfg.get("num_experts")),
        "rope_scaling": cfg.get("rope_scaling") not in (None, {}),
        "rope_parameters": rope.get("rope_type", "default") != "default",
        "use_sliding_window": bool(cfg.get("use_sliding_window")),
        "attention_bias": bool(cfg.get("attention_bias")),
        "hidden_act": cfg.get("hidden_act", "silu") != "silu",
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ConfigError(f"{where}: field '{bad[0]}' = {cfg.get(bad[0])!r} is not supported (dense Qwen3 only)")
    heads = cfg["num_attention_heads"]
    return ModelArch(
        architecture="Qwen3ForCausalLM",
        hidden_size=cfg["hidden_size"],
        num_layers=cfg["num_hidden_layers"],
        num_attention_heads=heads,
        num_query_groups=cfg["num_key_value_heads"],
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        ffn_hidden_size=cfg["intermediate_size"],
        vocab_size=cfg["vocab_size"],
        max_position_embeddings=cfg["max_position_embeddings"],
        rope_theta=float(cfg.get("rope_theta") or rope.get("rope_theta") or 10000.0),
        norm_eps=float(cfg["rms_norm_eps"]),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qk_layernorm=True,
        init_std=float(cfg.get("initializer_range", 0.02)),
    )


SUPPORTED = {"Qwen3ForCausalLM": _qwen3}


def hf_config_path(path: str | Path) -> Path:
    path = Path(path)
    return path / "config.json" if path.is_dir() else path


def load_arch(path: str | Path) -> ModelArch:
    """Parse and check an HF ``config.json`` (or a directory holding one)."""
    file = hf_config_path(path)
    if not file.is_file():
        raise ConfigError(f"model config not found: {file}")
    try:
        cfg = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file}: invalid JSON: {exc}") from None
    return arch_from_dict(cfg, str(file))


def arch_from_dict(cfg: dict[str, Any], where: str = "<config>") -> ModelArch:
    archs = cfg.get("architectures")
    if not archs:
        raise ConfigError(f"{where}: missing field 'architectures'")
    builder = SUPPORTED.get(archs[0])
    if builder is None:
        raise ConfigError(
            f"{where}: field 'architectures' = {archs[0]!r} is not supported (supported: {sorted(SUPPORTED)})"
        )
    return builder(cfg, where)


def padded_vocab_size(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Embedding rows: vocab rounded up to a multiple of lcm(divisible_by, TP).

    Megatron-LM pads to divisible_by * TP, which changes the embedding's shape with the TP size, and
    megatron-core 0.16.1 cannot reshard the embedding's optimizer state across such a change. With the
    lcm, power-of-two TP sizes up to divisible_by all give the same shape (Qwen3's 151936 needs no
    padding at all), so checkpoints move freely between layouts."""
    multiple = math.lcm(divisible_by, tp)
    return -(-vocab_size // multiple) * multiple
