"""The answer's confidence and its calibration: P(answer tokens) from their logits, and `AnswerCalibration`, the
temperature and isotonic curve that turn it into a calibrated confidence (fitted by `calibration.py`). Imports no
torch, so the options that hold a calibration load fast (`sage-nano --help`)."""

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


@dataclass(frozen=True)
class AnswerCalibration:
    """How an answer's logits become its calibrated confidence: the logits divided by `temperature`, then
    P(answer at T) mapped through the isotonic curve (`curve_x` increasing, `curve_y` its accuracy; linear
    between points, flat beyond the ends). Without a curve, the temperature alone."""

    temperature: float
    curve_x: tuple[float, ...] = ()
    curve_y: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"the calibration temperature must be positive, got {self.temperature}")
        x, y = np.asarray(self.curve_x, float), np.asarray(self.curve_y, float)
        if len(x) != len(y) or np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
            raise ValueError("the calibration curve needs as many x as y values, both non-decreasing")
        if len(x) and (x.min() < 0 or x.max() > 1 or y.min() < 0 or y.max() > 1):
            raise ValueError("the calibration curve's points must lie in [0, 1]")

    @property
    def method(self) -> str:
        return "temperature+isotonic" if self.curve_x else "temperature"

    def confidence(self, logits: torch.Tensor, ids: torch.Tensor) -> float:
        """The calibrated P(answer tokens) from the logits (A, V) at the answer's tokens (A,)."""
        return self.recalibrate(answer_prob(logits, ids, self.temperature))

    def recalibrate(self, prob_at_temperature: float) -> float:
        if not self.curve_x:
            return prob_at_temperature
        return float(np.interp(prob_at_temperature, self.curve_x, self.curve_y))

    def to_dict(self) -> dict:
        return {"temperature": self.temperature, "curve_x": list(self.curve_x), "curve_y": list(self.curve_y)}

    @classmethod
    def from_dict(cls, data: dict) -> AnswerCalibration:
        """From `to_dict`'s form (as in `calibration.json` and a report's options); a curve may be absent."""
        return cls(float(data["temperature"]), tuple(data.get("curve_x", ())), tuple(data.get("curve_y", ())))
