"""Parameter counts of SAGE presets per component, measured on the meta device."""

from __future__ import annotations

import torch

from .config import SageConfig
from .model import SageForCausalLM


def build_on_meta(preset: str, **overrides) -> SageForCausalLM:
    """Instantiates a preset without allocating its weights (any size fits)."""
    with torch.device("meta"):
        return SageForCausalLM(SageConfig.from_name(preset, **overrides))


def parameter_breakdown(preset: str) -> dict[str, int]:
    """Parameters of each component of a preset, and the total (tied weights counted once)."""
    model = build_on_meta(preset)
    parts = {
        "embeddings + LM head": [model.model.embed_tokens, model.lm_head],
        "forward attention": [layer.attn for layer in model.model.layers],
        "forward FFN": [layer.ffn for layer in model.model.layers],
        "forward LayerNorms": [m for layer in model.model.layers for m in (layer.ln_attn, layer.ln_ffn)]
        + [model.model.norm],
        "inverse analysis stack": [model.inverse] if model.inverse is not None else [],
        "meta-cognitive head": [model.meta_head] if model.meta_head is not None else [],
    }
    counts = {name: _count_unique(modules) for name, modules in parts.items()}
    counts["total"] = _count_unique([model])
    return counts


def _count_unique(modules: list[torch.nn.Module]) -> int:
    seen: dict[int, int] = {}
    for module in modules:
        for param in module.parameters():
            seen[id(param)] = param.numel()
    return sum(seen.values())
