"""ExtractDecisionPoints' scores: how uncertain the model was at each generated token, by a named rule.

`DECISION_SCORES` maps each rule's name to its function of the token's normalised entropy, its top-1 minus top-2
probability margin and (SAGE models) the meta-cognitive head's decision probability at step starts; the engine picks
decision points with it and validation re-measures a claimed score with the same function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import PreTrainedModel

from ..decoding import Chain, is_sage
from .measure import Scores

DecisionScore = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _needs_meta(meta: torch.Tensor | None, name: str) -> torch.Tensor:
    if meta is None:
        raise ValueError(f"decision_score={name!r} needs a SAGE model with a meta-cognitive head")
    return meta


def entropy_score(entropies: torch.Tensor, margins: torch.Tensor, meta: torch.Tensor | None) -> torch.Tensor:
    """The normalised entropy of the next-token distribution."""
    return entropies


def margin_score(entropies: torch.Tensor, margins: torch.Tensor, meta: torch.Tensor | None) -> torch.Tensor:
    """1 − (top-1 − top-2 probability): high where two tokens were close."""
    return 1 - margins


def meta_head_score(entropies: torch.Tensor, margins: torch.Tensor, meta: torch.Tensor | None) -> torch.Tensor:
    """SAGE's meta-cognitive head: its decision probability at step starts."""
    return _needs_meta(meta, "meta")


def combined_score(entropies: torch.Tensor, margins: torch.Tensor, meta: torch.Tensor | None) -> torch.Tensor:
    """The larger of the normalised entropy and the meta head's score."""
    return torch.maximum(entropies, _needs_meta(meta, "combined"))


DECISION_SCORES: dict[str, DecisionScore] = {
    "entropy": entropy_score,
    "margin": margin_score,
    "meta": meta_head_score,
    "combined": combined_score,
}


def default_decision_score(model: PreTrainedModel) -> str:
    """What "auto" means: combined on SAGE models, entropy on others."""
    return "combined" if is_sage(model) else "entropy"


def decision_scores(
    name: str, entropies: torch.Tensor, margins: torch.Tensor, meta: torch.Tensor | None
) -> torch.Tensor:
    """(T,) the decision score of every generated token under the rule `name` (a key of `DECISION_SCORES`)."""
    if name not in DECISION_SCORES:
        raise ValueError(f"unknown decision score {name!r}; choose one of {sorted(DECISION_SCORES)}")
    return DECISION_SCORES[name](entropies, margins, meta)


def top2_margins(top_probs: torch.Tensor) -> torch.Tensor:
    """(T,) top-1 minus top-2 probability, from each token's top-k probabilities (T, k) (the top-1 alone: k = 1)."""
    return top_probs[:, 0] - (top_probs[:, 1] if top_probs.shape[1] > 1 else 0)


def step_separators(model: PreTrainedModel) -> set[int]:
    """The ids after which a SAGE model starts a step (where its meta head was trained to score decisions)."""
    return set(getattr(model.config, "step_separator_token_ids", None) or [])


def meta_at_step_starts(scores: Scores, chain: Chain, separators: set[int]) -> torch.Tensor | None:
    """(T,) the meta head's decision probability where the predicting position is a step separator (where it
    was trained), 0 elsewhere."""
    if scores.meta_decision is None:
        return None
    positions = chain.predicting(range(len(chain.token_ids)))
    inputs = chain.inputs
    return torch.tensor([float(scores.meta_decision[p]) if int(inputs[p]) in separators else 0.0 for p in positions])
