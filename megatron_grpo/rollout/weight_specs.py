"""What a weight update into the rollout engine must contain, checked tensor by tensor (no vLLM here).

The trainer streams HF-named full tensors (``model.layers.0.self_attn.q_proj.weight``) in byte-bounded
buckets. A bad tensor must be caught before the engine touches its weights, so every name, shape and
dtype is checked against the HF parameter set of the model, derived once from its config on the meta
device (no memory): ``check_manifest`` checks a whole update up front, ``WeightStream`` each bucket and,
at the end, that nothing is missing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from transformers import PretrainedConfig

from megatron_grpo.families import arch_from_dict, hf_layout

Shape = tuple[int, ...]
WeightSpec = tuple[Shape, torch.dtype]


class WeightMismatchError(ValueError):
    """A weight update does not fit the engine's model; the message names the tensor."""


@dataclass(frozen=True)
class ModelWeights:
    """The HF parameters an update must provide."""

    specs: dict[str, WeightSpec]
    """Required HF name -> (shape, dtype), one entry per distinct parameter."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Tied copy -> the parameter it shares (``lm_head.weight`` -> ``model.embed_tokens.weight``): accepted,
    checked against the shared parameter's spec and dropped."""
    locations: dict[str, Location] = field(default_factory=dict)
    """HF name -> where the engine holds it; see ``engine_locations``."""


Location = tuple[str, int | None, int]
"""(engine parameter, expert index into its first dim or None, first row)."""


def hf_weight_specs(
    config: PretrainedConfig, dtype: torch.dtype
) -> tuple[dict[str, WeightSpec], dict[str, str]]:
    """The checkpoint tensors of ``config``'s model (its family's HF layout, as ``save_pretrained`` writes
    them) and the tied aliases (``lm_head.weight`` of a tied model)."""
    arch = arch_from_dict(config.to_dict(), f"engine model config ({config.model_type})")
    specs = {name: (shape, dtype) for name, shape in hf_layout(arch).items()}
    aliases = {"lm_head.weight": "model.embed_tokens.weight"} if arch.tie_word_embeddings else {}
    return specs, aliases


# vLLM fuses each layer's routed experts into two 3-D parameters: w13 = [gate; up] per expert, and w2.
_EXPERT = re.compile(r"^(?P<layer>.*\.mlp\.experts)\.(?P<e>\d+)\.(?P<proj>gate|up|down)_proj\.weight$")


def engine_locations(specs: Mapping[str, WeightSpec],
                     packed_modules: Mapping[str, list[str]]) -> dict[str, Location]:
    """HF name -> (engine parameter, expert, first row): an engine fusing modules (``qkv_proj`` = q, k, v)
    stacks their tensors along dim 0 in ``packed_modules`` order (vLLM's ``packed_modules_mapping``); a
    routed expert's tensors sit at their expert's index of the layer's fused ``w13_weight`` / ``w2_weight``."""
    fused_of = {part: (fused, parts) for fused, parts in packed_modules.items() for part in parts}
    locations: dict[str, Location] = {}
    for name in specs:
        if m := _EXPERT.match(name):
            layer, e, proj = m["layer"], int(m["e"]), m["proj"]
            row = specs[f"{layer}.{e}.gate_proj.weight"][0][0] if proj == "up" else 0
            locations[name] = (f"{layer}.routed_experts.{'w2' if proj == 'down' else 'w13'}_weight", e, row)
            continue
        module, _, leaf = name.rpartition(".")
        parent, _, last = module.rpartition(".")
        if last not in fused_of:
            locations[name] = (name, None, 0)
            continue
        fused, parts = fused_of[last]
        before = parts[: parts.index(last)]
        locations[name] = (f"{parent}.{fused}.{leaf}", None,
                           sum(specs[f"{parent}.{p}.{leaf}"][0][0] for p in before))
    return locations


def checksum(tensor: torch.Tensor) -> torch.Tensor:
    """Cheap fingerprint of a weight: float64 sum of its first and last rows (a 1-D tensor: all of it).
    The trainer takes it of what it sends, the engine of what it holds; a stale, swapped or truncated
    tensor changes it at O(1) relative size. A 0-dim tensor on the weight's device: stack many, read
    them once (one device sync per refit, not one per tensor)."""
    return (tensor if tensor.dim() == 1 else tensor[:: max(tensor.shape[0] - 1, 1)]).sum(dtype=torch.float64)


def checksums_agree(sent: float, held: float) -> bool:
    """Equal up to summation order (the same values, strided differently on the two sides)."""
    return abs(sent - held) <= 1e-9 * (1.0 + abs(sent))


def check_tensor(weights: ModelWeights, name: str, shape: Shape, dtype: torch.dtype) -> None:
    """Raise ``WeightMismatchError`` naming ``name`` unless it is a parameter of this shape and dtype."""
    spec = weights.specs.get(weights.aliases.get(name, name))
    if spec is None:
        raise WeightMismatchError(f"{name}: not a parameter of this model ({len(weights.specs)} expected)")
    if tuple(shape) != spec[0]:
        raise WeightMismatchError(f"{name}: shape {tuple(shape)} != expected {spec[0]}")
    if dtype != spec[1]:
        raise WeightMismatchError(f"{name}: dtype {dtype} != expected {spec[1]} (cast before sending)")


def check_manifest(weights: ModelWeights, manifest: Mapping[str, WeightSpec]) -> None:
    """Check a whole update before anything is sent: every tensor known and well-formed, none missing."""
    for name, (shape, dtype) in manifest.items():
        check_tensor(weights, name, shape, dtype)
    missing = [n for n in weights.specs if n not in manifest]
    if missing:
        raise WeightMismatchError(_missing_message(missing))


def _missing_message(missing: list[str]) -> str:
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    return f"{missing[0]}: missing from the update (missing: {', '.join(missing[:3])}{more})"


class WeightStream:
    """Bookkeeping of one update: checks each bucket, finds what is missing at the end."""

    def __init__(self, weights: ModelWeights):
        self._weights = weights
        self._received: set[str] = set()

    def add(self, bucket: list[tuple[str, Shape, torch.dtype]]) -> list[str]:
        """Check a whole bucket (name, shape, dtype of each tensor), then return the names the engine
        loads: the bucket without tied aliases."""
        names = set()
        for name, shape, dtype in bucket:
            check_tensor(self._weights, name, tuple(shape), dtype)
            if name in self._received or name in names:
                raise WeightMismatchError(f"{name}: sent twice in one update")
            names.add(name)
        self._received |= names
        return [name for name, _, _ in bucket if name not in self._weights.aliases]

    def finish(self) -> None:
        """Raise ``WeightMismatchError`` naming the first required tensor that never arrived."""
        missing = [n for n in self._weights.specs if n not in self._received]
        if missing:
            raise WeightMismatchError(_missing_message(missing))
