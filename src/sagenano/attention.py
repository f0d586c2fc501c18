"""Reading a model's attention: its self-attention layers, its named head groups, and eager attention for a pass
(the only implementation that returns weights). Works for SAGE and for the model families transformers ships."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn
from transformers import PreTrainedModel


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """(name, module, index of the weights in its output) for every self-attention layer of the model.

    Uses the table transformers keeps for `output_attentions` (`_can_record_outputs`), so it works for
    any model family transformers ships, and SAGE's own layers.
    """
    from .model import MultiscaleAttention

    sage = [(n, m, 1) for n, m in model.named_modules() if isinstance(m, MultiscaleAttention) and m.is_causal]
    if sage:
        return sage
    found = []
    for owner in model.modules():
        spec = (getattr(owner, "_can_record_outputs", None) or {}).get("attentions")
        if spec is None:
            continue
        target = getattr(spec, "target_class", spec)
        index = getattr(spec, "index", 1) or 1
        layer_name = getattr(spec, "layer_name", None)
        for name, module in owner.named_modules():
            if isinstance(module, target) and (layer_name is None or name.endswith(layer_name.lstrip("."))):
                found.append((name, module, index))
        if found:
            return found
    raise ValueError(f"cannot find the attention layers of {type(model).__name__}; pass attention='none'")


def head_groups(model: nn.Module) -> dict[str, int]:
    """Named groups of attention heads: SAGE's reasoning / memory / meta-cognitive, else one group 'all'."""
    groups = getattr(model.config, "head_groups", None)
    if groups:
        return dict(groups)
    heads = getattr(model.config, "num_attention_heads", None) or getattr(model.config, "n_head", None)
    return {"all": int(heads)}


@contextlib.contextmanager
def eager_attention(model: PreTrainedModel, needed: bool) -> Iterator[None]:
    """Switches to eager attention (the only kind that returns weights) for the block, then back."""
    previous = model.config._attn_implementation
    if not needed or previous == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
