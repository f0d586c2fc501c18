"""ExtractDecisionPoints' scores: how close the model came, at each generated token, to going another way.

`DECISION_SCORES` maps each rule's name to its function of a `TokenUncertainty`: the probabilities of the chosen
token and of the most likely ones (the model's own distribution, or at the calibrated token temperature:
`ExplainOptions.decision_temperature`), the normalised entropy of the raw distribution, and (SAGE models) the
meta-cognitive head's decision probability at step starts. "alternatives" and "margin" see a
two-way choice the same way on any vocabulary (a 50/50 choice scores 0.5 and 1.0), which the entropy normalised by
the log of the vocabulary size does not (ln 2 / ln 4096 = 0.08). The engine picks candidates with the rule, and
shows those whose alternatives change the answer when rolled out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from ..decoding import Chain
from .measure import Scores


@dataclass
class TokenUncertainty:
    """Per generated token (T of them): what the decision scores are made of."""

    entropies: torch.Tensor  # (T,) normalised entropy of the raw distribution, 0..1
    top_probs: torch.Tensor  # (T, k) probabilities of the k most likely tokens (k >= 2)
    chosen_probs: torch.Tensor  # (T,) probability of the generated token
    meta: torch.Tensor | None  # (T,) the meta head's decision probability at step starts, 0 elsewhere; None: no head

    @classmethod
    def of(cls, scores: Scores, meta: torch.Tensor | None, calibrated: bool = False) -> TokenUncertainty:
        """From a scoring pass: at the token temperature when `calibrated` (and the pass has one), else the model's
        own distribution (temperature 1, what sampling from the model draws from)."""
        if calibrated and scores.calibrated:
            return cls(scores.entropies, scores.top_logprobs.exp(), scores.calibrated_logprobs.exp(), meta)
        return cls(scores.entropies, scores.top_raw_logprobs.exp(), scores.logprobs.exp(), meta)

    def at(self, positions: slice) -> TokenUncertainty:
        meta = None if self.meta is None else self.meta[positions]
        return TokenUncertainty(
            self.entropies[positions], self.top_probs[positions], self.chosen_probs[positions], meta
        )


DecisionScore = Callable[[TokenUncertainty], torch.Tensor]


def _needs_meta(meta: torch.Tensor | None, name: str) -> torch.Tensor:
    if meta is None:
        raise ValueError(f"decision_score={name!r} needs a SAGE model with a meta-cognitive head")
    return meta


def alternatives_score(u: TokenUncertainty) -> torch.Tensor:
    """The probability the model gave to other tokens than the one it wrote."""
    return 1 - u.chosen_probs


def margin_score(u: TokenUncertainty) -> torch.Tensor:
    """1 − (top-1 − top-2 probability): high where two tokens were close."""
    second = u.top_probs[:, 1] if u.top_probs.shape[1] > 1 else 0
    return 1 - (u.top_probs[:, 0] - second)


def entropy_score(u: TokenUncertainty) -> torch.Tensor:
    """The entropy of the raw next-token distribution over log(vocabulary size)."""
    return u.entropies


def meta_head_score(u: TokenUncertainty) -> torch.Tensor:
    """SAGE's meta-cognitive head: its decision probability at step starts."""
    return _needs_meta(u.meta, "meta")


def combined_score(u: TokenUncertainty) -> torch.Tensor:
    """The larger of the margin score and the meta head's score."""
    return torch.maximum(margin_score(u), _needs_meta(u.meta, "combined"))


DECISION_SCORES: dict[str, DecisionScore] = {
    "margin": margin_score,
    "alternatives": alternatives_score,
    "entropy": entropy_score,
    "meta": meta_head_score,
    "combined": combined_score,
}


def default_decision_score(model: PreTrainedModel) -> str:
    """What "auto" means: the score that tracked the measured resampling effect best on development items
    (docs/measurements.md), for SAGE models and others alike."""
    return "margin"


def decision_scores(name: str, uncertainty: TokenUncertainty) -> torch.Tensor:
    """(T,) the decision score of every generated token under the rule `name` (a key of `DECISION_SCORES`)."""
    if name not in DECISION_SCORES:
        raise ValueError(f"unknown decision score {name!r}; choose one of {sorted(DECISION_SCORES)}")
    return DECISION_SCORES[name](uncertainty)


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
