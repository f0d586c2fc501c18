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
    any model family transformers ships, and SAGE's own layers. Families that keep no such table (BLOOM, Falcon, MPT,
    GPT-Neo) are read where transformers' own `output_attentions` reads them: each decoder layer (the classes named in
    `_no_split_modules`) returns (hidden states, attention weights), the weights filled under eager attention.
    """
    found = _sage_attention(model) or _recorded_attention(model) or _decoder_layers(model)
    if not found:
        raise ValueError(
            f"cannot find the attention layers of {type(model).__name__}, which explaining reads: it has neither "
            "transformers' `_can_record_outputs` table nor decoder layers named in `_no_split_modules`; set "
            f"`{type(model).__name__}._no_split_modules = ['<its decoder layer class>']` (a layer whose forward "
            "returns (hidden states, attention weights))"
        )
    return found


def _sage_attention(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    from .model import MultiscaleAttention

    return [(n, m, 1) for n, m in model.named_modules() if isinstance(m, MultiscaleAttention) and m.is_causal]


def _recorded_attention(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """The attention layers named in transformers' `_can_record_outputs` table ([] when the model keeps none)."""
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
    return found


def _decoder_layers(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """The decoder layers of a model without the table, whose output holds the attention weights at index 1."""
    kinds = set(getattr(model, "_no_split_modules", None) or ())
    return [(name, module, 1) for name, module in model.named_modules() if type(module).__name__ in kinds]


def head_groups(model: nn.Module) -> dict[str, int]:
    """Named groups of attention heads: SAGE's reasoning / memory / meta-cognitive, else one group 'all'."""
    groups = getattr(model.config, "head_groups", None)
    if groups:
        return dict(groups)
    heads = getattr(model.config, "num_attention_heads", None) or getattr(model.config, "n_head", None)
    return {"all": int(heads)}


@contextlib.contextmanager
def eager_attention(model: PreTrainedModel, needed: bool) -> Iterator[dict[str, bool]]:
    """Makes the block's forward passes return attention weights; yields the arguments each pass needs for that.

    Switches to eager attention (the only kind that returns weights) for the block, then back. The families read
    through their decoder layers (`attention_modules`) choose their attention in their own code, not through
    transformers' registry, so it cannot be switched (Falcon stays on SDPA, with a warning); they return weights when
    asked with `output_attentions=True`, which the yielded arguments then hold."""
    if needed and not (_sage_attention(model) or _recorded_attention(model)):
        yield {"output_attentions": True}
        return
    previous = model.config._attn_implementation
    if not needed or previous == "eager":
        yield {}
        return
    model.set_attn_implementation("eager")
    try:
        yield {}
    finally:
        model.set_attn_implementation(previous)
