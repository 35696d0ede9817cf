"""Model families: one module per architecture (``qwen3``, ``qwen2``, ``qwen3_moe``), registered here by
its HF ``architectures[0]``. model/, convert/, refit/ and plan/ read a family through the functions below
and never name an architecture themselves: adding one is a module plus ``register``. See
docs/model_families.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megatron_grpo.config import ConfigError
from megatron_grpo.families import qwen2, qwen3, qwen3_moe
from megatron_grpo.families.spec import Family, Kind, ModelArch, Rule, Shape

__all__ = ["FAMILIES", "Family", "Kind", "ModelArch", "ParamCounts", "Rule", "arch_from_dict", "family",
           "hf_config_path", "hf_layout", "load_arch", "padded_vocab_size", "param_counts", "register"]

FAMILIES: dict[str, Family] = {}


def register(fam: Family) -> Family:
    if fam.architecture in FAMILIES:
        raise ValueError(f"model family {fam.architecture!r} is registered twice")
    FAMILIES[fam.architecture] = fam
    return fam


for _module in (qwen3, qwen2, qwen3_moe):
    register(_module.FAMILY)


def family(arch: ModelArch | str) -> Family:
    name = arch if isinstance(arch, str) else arch.architecture
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"architecture {name!r} is not supported (supported: {sorted(FAMILIES)})") from None


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
    """The family named by ``architectures[0]`` parses the rest; any field that would make it train a
    different model than the checkpoint describes (sliding window, rope scaling, ...) is rejected by name."""
    archs = cfg.get("architectures")
    if not archs:
        raise ConfigError(f"{where}: missing field 'architectures'")
    fam = FAMILIES.get(archs[0])
    if fam is None:
        raise ConfigError(
            f"{where}: field 'architectures' = {archs[0]!r} is not supported (supported: {sorted(FAMILIES)})"
        )
    return fam.parse(cfg, where)


def hf_layout(arch: ModelArch) -> dict[str, Shape]:
    """Every HF tensor name and shape the architecture implies, in the order a refit streams them: layer by
    layer, a routed expert's tensors together (what an export must contain, what a refit sends)."""
    out = {"model.embed_tokens.weight": (arch.vocab_size, arch.hidden_size)}
    per_layer = list(family(arch).layer_layout(arch).items())
    for i in range(arch.num_layers):
        j = 0
        while j < len(per_layer):  # a run of per-expert suffixes expands expert by expert
            run = [per_layer[j]]
            while "{e}" in run[0][0] and j + len(run) < len(per_layer) and "{e}" in per_layer[j + len(run)][0]:
                run.append(per_layer[j + len(run)])
            for e in range(arch.num_experts) if "{e}" in run[0][0] else [None]:
                out.update({f"model.layers.{i}." + suffix.format(e=e): shape for suffix, shape in run})
            j += len(run)
    out["model.norm.weight"] = (arch.hidden_size,)
    if not arch.tie_word_embeddings:
        out["lm_head.weight"] = (arch.vocab_size, arch.hidden_size)
    return out


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts by where they live, from the family's HF layout (what ``plan`` sizes)."""

    embedding: int         # input embedding (and the output layer again when untied)
    layer_dense: int       # one layer's tensors outside the routed experts (attention, norms, router, MLP)
    layer_expert: int      # one routed expert of one layer (0 for a dense model)
    final_norm: int

    def total(self, arch: ModelArch) -> int:
        return self.embedding + arch.num_layers * (self.layer_dense + arch.num_experts * self.layer_expert) \
            + self.final_norm

    def active(self, arch: ModelArch) -> int:
        """Parameters one token passes through (top-k experts per layer)."""
        return self.embedding + arch.num_layers * (self.layer_dense + arch.moe_topk * self.layer_expert) \
            + self.final_norm


def param_counts(arch: ModelArch) -> ParamCounts:
    per_layer = family(arch).layer_layout(arch)
    dense = sum(math.prod(s) for k, s in per_layer.items() if "{e}" not in k)
    expert = sum(math.prod(s) for k, s in per_layer.items() if "{e}" in k)
    embed = arch.vocab_size * arch.hidden_size * (1 if arch.tie_word_embeddings else 2)
    return ParamCounts(embedding=embed, layer_dense=dense, layer_expert=expert, final_norm=arch.hidden_size)


def padded_vocab_size(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Embedding rows: vocab rounded up to a multiple of lcm(divisible_by, TP).

    Megatron-LM pads to divisible_by * TP, which changes the embedding's shape with the TP size, and
    megatron-core 0.16.1 cannot reshard the embedding's optimizer state across such a change. With the
    lcm, power-of-two TP sizes up to divisible_by all give the same shape (Qwen3's 151936 needs no
    padding at all), so checkpoints move freely between layouts."""
    multiple = math.lcm(divisible_by, tp)
    return -(-vocab_size // multiple) * multiple
