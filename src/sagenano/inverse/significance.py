"""Eq. 7 of the paper, Significance(t_j, i) = w_ij · |∇_{h_j} L_i| · H_i, its attention factor w_ij, and how token
scores become a span's.

`ATTENTION_AGGREGATES` maps each name to how the traced attention (layers × head groups) becomes one row per
generated token; "group:<name>" picks one head group. `SPAN_AGGREGATES` maps each name to how a span's token scores
combine. The gradient factor is `measure.step_gradient_norms`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import PreTrainedModel

from ..attention import head_groups
from ..generation import ReasoningTrace

AttentionAggregate = Callable[[ReasoningTrace, PreTrainedModel], torch.Tensor]
GROUP_PREFIX = "group:"


def significance(attention: torch.Tensor, gradient: torch.Tensor, entropy: float) -> torch.Tensor:
    """Eq. 7: the significance of every input position j for one step i, from the step's attention to j (w_ij),
    the norm of its loss gradient at h_j (|∇_{h_j} L_i|) and its entropy H_i (a factor common to all j)."""
    return attention * gradient * entropy


def _group_weighted(summary: torch.Tensor, model: PreTrainedModel) -> torch.Tensor:
    """(T, L, N) the traced attention summary (T, L, G, N) averaged over heads: each group weighted by its size."""
    sizes = torch.tensor(list(head_groups(model).values()), dtype=torch.float)
    return (summary * (sizes / sizes.sum())[None, None, :, None]).sum(2)


def mean_attention(trace: ReasoningTrace, model: PreTrainedModel) -> torch.Tensor:
    """All layers and heads."""
    return _group_weighted(trace.attention.float(), model).mean(1)


def last_layer_attention(trace: ReasoningTrace, model: PreTrainedModel) -> torch.Tensor:
    """The last layer's heads."""
    return _group_weighted(trace.attention.float()[:, -1:], model).mean(1)


def rollout_attention(trace: ReasoningTrace, model: PreTrainedModel) -> torch.Tensor:
    """Attention rollout over layers (the residual stream counted as half of every layer), from the full maps."""
    maps = trace.attention_maps.float().mean(1)  # (L, N, N) mean over heads
    eye = torch.eye(maps.shape[-1])
    rolled = eye
    for layer in maps:
        mixed = 0.5 * layer + 0.5 * eye
        rolled = (mixed / mixed.sum(-1, keepdim=True)) @ rolled
    start = len(trace.prompt_ids) - 1
    return rolled[start : start + trace.num_tokens]


ATTENTION_AGGREGATES: dict[str, AttentionAggregate] = {
    "mean": mean_attention,
    "last": last_layer_attention,
    "rollout": rollout_attention,
}


def check_attention_aggregate(name: str) -> None:
    """A ValueError unless `name` is a key of `ATTENTION_AGGREGATES` or "group:<name>"."""
    if name not in ATTENTION_AGGREGATES and not name.startswith(GROUP_PREFIX):
        raise ValueError(
            f"unknown attention aggregate {name!r}; choose one of {sorted(ATTENTION_AGGREGATES)} or group:<name>"
        )


def attention_rows(trace: ReasoningTrace, model: PreTrainedModel, how: str) -> torch.Tensor:
    """(T, N): for every generated token, the attention of the position predicting it over the input
    positions (N = P + T − 1), aggregated over layers and heads as `how` says."""
    check_attention_aggregate(how)
    if how.startswith(GROUP_PREFIX):
        name = how.removeprefix(GROUP_PREFIX)
        if name not in trace.head_groups:
            raise ValueError(f"unknown head group {name!r}; the model has {trace.head_groups}")
        return trace.attention.float()[:, :, trace.head_groups.index(name)].mean(1)
    return ATTENTION_AGGREGATES[how](trace, model)


SPAN_AGGREGATES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": torch.mean,
    "max": torch.max,
    "sum": torch.sum,
}


def check_span_aggregate(name: str) -> None:
    """A ValueError unless `name` is a key of `SPAN_AGGREGATES`."""
    if name not in SPAN_AGGREGATES:
        raise ValueError(f"unknown span aggregate {name!r}; choose one of {sorted(SPAN_AGGREGATES)}")


def span_score(scores: torch.Tensor, positions: list[int], how: str) -> float:
    """A span's score from its tokens' scores (`how`: a key of `SPAN_AGGREGATES`)."""
    check_span_aggregate(how)
    return float(SPAN_AGGREGATES[how](scores[positions]))
