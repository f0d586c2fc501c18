"""Confidence and its calibration: P(answer tokens) from their logits, and `Calibration`, the temperatures and
isotonic curves that turn the answer's and each step's probability into calibrated confidences, the temperature
tokens are read at, and what a familiar question looks like (fitted by `calibration.py`). Imports no torch, so
the options that hold a calibration load fast (`sage-nano --help`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def answer_prob(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> float:
    """P(answer tokens): the product of each token's probability, from its logits (A, V) divided by `temperature`."""
    logp = (logits.float() / temperature).log_softmax(-1)
    return math.exp(float(logp.gather(1, ids.to(logits.device)[:, None]).sum()))


def mean_token_prob(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> float:
    """A step's mean token probability from its logits (n, V) divided by `temperature`, at its tokens (n,)."""
    logp = (logits.float() / temperature).log_softmax(-1)
    return float(logp.gather(1, ids.to(logits.device)[:, None]).exp().mean())


def _check_curve(x: tuple[float, ...], y: tuple[float, ...], what: str) -> None:
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    if len(xs) != len(ys) or np.any(np.diff(xs) < 0) or np.any(np.diff(ys) < 0):
        raise ValueError(f"the {what} calibration curve needs as many x as y values, both non-decreasing")
    if len(xs) and (xs.min() < 0 or xs.max() > 1 or ys.min() < 0 or ys.max() > 1):
        raise ValueError(f"the {what} calibration curve's points must lie in [0, 1]")


def _through(prob: float, x: tuple[float, ...], y: tuple[float, ...]) -> float:
    """`prob` mapped through an isotonic curve (linear between points, flat beyond the ends); no curve: unchanged."""
    return float(np.interp(prob, x, y)) if x else prob


@dataclass(frozen=True)
class Calibration:
    """How a model's probabilities become calibrated confidences, on one scale for tokens, steps and the answer.

    The answer: its logits divided by `temperature`, then P(answer at T) mapped through the isotonic curve
    (`curve_x` increasing, `curve_y` the accuracy there; linear between points, flat beyond the ends). A step: its
    tokens' logits divided by `step_temperature`, their mean probability mapped through the step curve (None: steps
    are not calibrated). A token: its probability at `token_temperature`, the temperature at which reference chains
    are most likely (None: tokens are not calibrated). `question_nll_bound`: the 99th
    percentile of held-out questions' mean negative log-likelihood per token, above which a question is unlike the
    model's training (None: unknown). `question_token_ids`: every token of the calibration questions' prompts (a
    question made of others is unlike them; empty: unknown)."""

    temperature: float
    curve_x: tuple[float, ...] = ()
    curve_y: tuple[float, ...] = ()
    step_temperature: float | None = None
    step_curve_x: tuple[float, ...] = ()
    step_curve_y: tuple[float, ...] = ()
    question_nll_bound: float | None = None
    question_token_ids: tuple[int, ...] = ()
    token_temperature: float | None = None

    def __post_init__(self) -> None:
        for name in ("temperature", "step_temperature", "token_temperature"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"the calibration {name.replace('_', ' ')} must be positive, got {value}")
        _check_curve(self.curve_x, self.curve_y, "answer")
        _check_curve(self.step_curve_x, self.step_curve_y, "step")

    @property
    def method(self) -> str:
        return "temperature+isotonic" if self.curve_x else "temperature"

    def confidence(self, logits: torch.Tensor, ids: torch.Tensor) -> float:
        """The calibrated P(answer tokens) from the logits (A, V) at the answer's tokens (A,)."""
        return self.recalibrate(answer_prob(logits, ids, self.temperature))

    def recalibrate(self, prob_at_temperature: float) -> float:
        return _through(prob_at_temperature, self.curve_x, self.curve_y)

    def step_confidence(self, logits: torch.Tensor, ids: torch.Tensor) -> float | None:
        """The calibrated probability that a step is right, from its logits (n, V) at its tokens (n,)."""
        if self.step_temperature is None:
            return None
        return self.recalibrate_step(mean_token_prob(logits, ids, self.step_temperature))

    def recalibrate_step(self, mean_prob_at_temperature: float) -> float:
        return _through(mean_prob_at_temperature, self.step_curve_x, self.step_curve_y)

    def to_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "curve_x": list(self.curve_x),
            "curve_y": list(self.curve_y),
            "step_temperature": self.step_temperature,
            "step_curve_x": list(self.step_curve_x),
            "step_curve_y": list(self.step_curve_y),
            "question_nll_bound": self.question_nll_bound,
            "question_token_ids": list(self.question_token_ids),
            "token_temperature": self.token_temperature,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        """From `to_dict`'s form (as in `calibration.json` and a report's options); the curves, the step
        calibration and the question bound may be absent (a file from before them)."""
        step_temperature, bound = data.get("step_temperature"), data.get("question_nll_bound")
        token_temperature = data.get("token_temperature")
        return cls(
            float(data["temperature"]),
            tuple(data.get("curve_x", ())),
            tuple(data.get("curve_y", ())),
            None if step_temperature is None else float(step_temperature),
            tuple(data.get("step_curve_x", ())),
            tuple(data.get("step_curve_y", ())),
            None if bound is None else float(bound),
            tuple(int(i) for i in data.get("question_token_ids", ())),
            None if token_temperature is None else float(token_temperature),
        )
