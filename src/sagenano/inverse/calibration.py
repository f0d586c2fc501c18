"""Calibration of the answer confidence, fitted on a calibration set and stored with the model.

The answer confidence is P(answer tokens), the product of their probabilities. Calibration divides
the logits at the answer tokens by one temperature T, fitted to minimise the log-loss of "the answer
is right" on items that are not the evaluation items, and then maps P(answer at T) through an isotonic
(monotone, piecewise-linear) curve fitted on the same items to the share of right answers.

Why both: the temperature alone cannot calibrate a mixture of tasks whose accuracies differ while
their answer probabilities do not (docs/measurements.md); a monotone map can, and it never reorders confidences, so it
changes no ranking. `calibration.json` beside the weights keeps T, the curve and what they were fitted on; `load_model`
reads it and `explain` reports raw and calibrated numbers."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..data import parse_answer, prompt_text
from ..data.schema import ReasoningItem
from ..decoding import room_after
from ..generation import trace_generate
from .answers import expected_calibration_error, marked_answer_tokens
from .confidence import AnswerCalibration, answer_prob

CALIBRATION_FILE = "calibration.json"
CALIBRATION_SEED = 2_000_003  # held-out-style items that are not the evaluation items (EVAL_SEED)
ECE_BINS = 15
TEMPERATURE_GRID = torch.logspace(math.log10(0.05), math.log10(20), 241)  # the temperatures a fit searches
CURVE_FLOOR = 0.01  # the isotonic curve stays in [1 %, 99 %]: a few calibration items never make a certainty


@dataclass
class AnswerRecord:
    """The logits at one chain's answer tokens, the tokens, and whether the answer was right."""

    logits: torch.Tensor  # (A, V)
    ids: torch.Tensor  # (A,)
    correct: bool

    def prob(self, temperature: float = 1.0) -> float:
        return answer_prob(self.logits, self.ids, temperature)


@torch.no_grad()
def answer_records(model, tokenizer, items: list[ReasoningItem], batch_size: int = 32) -> list[AnswerRecord]:
    """Greedy chains for the items and the logits at each chain's answer (chains without an answer count
    as wrong with confidence 0 and are left out of the fit)."""
    records = []
    for start in tqdm(range(0, len(items), batch_size), desc="calibration set", leave=False):
        chunk = items[start : start + batch_size]
        prompts = [prompt_text(item.question) for item in chunk]
        longest = max(len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts)
        room = room_after(model, longest, 200)
        traces = trace_generate(model, tokenizer, prompts, max_new_tokens=room, attention="none", chat=False)
        for item, trace in zip(chunk, traces, strict=True):
            span = marked_answer_tokens(trace)
            if span is None:
                continue
            ids = torch.cat([trace.prompt_ids, trace.token_ids])[None].to(model.device)
            offset = len(trace.prompt_ids) - 1  # the position predicting generated token t is offset + t
            logits = model(ids, use_cache=False).logits[0, offset + span[0] : offset + span[1]].float().cpu()
            correct = parse_answer(trace.text) == item.answer
            records.append(AnswerRecord(logits, trace.token_ids[span[0] : span[1]], correct))
    return records


def fit_temperature(records: list[AnswerRecord]) -> float:
    """The temperature of `TEMPERATURE_GRID` (0.05 to 20) that minimises the log-loss of correctness."""
    if not records:
        raise ValueError("no answered items to calibrate on")
    return min(TEMPERATURE_GRID.tolist(), key=lambda t: _log_loss(records, t))


def _log_loss(records: list[AnswerRecord], temperature: float) -> float:
    eps = 1e-6
    total = 0.0
    for record in records:
        p = min(max(record.prob(temperature), eps), 1 - eps)
        total -= math.log(p) if record.correct else math.log(1 - p)
    return total / len(records)


def fit_calibration(records: list[AnswerRecord], isotonic: bool = True) -> AnswerCalibration:
    """The temperature (`fit_temperature`), then, when `isotonic`, scikit-learn's isotonic regression of
    correctness on P(answer at T), its points kept within [CURVE_FLOOR, 1 - CURVE_FLOOR]."""
    temperature = fit_temperature(records)
    if not isotonic:
        return AnswerCalibration(temperature)
    try:
        from sklearn.isotonic import IsotonicRegression
    except ImportError as error:
        raise ImportError("fitting the isotonic curve needs scikit-learn: pip install 'sagenano[eval]'") from error
    probs = [r.prob(temperature) for r in records]
    fit = IsotonicRegression(y_min=CURVE_FLOOR, y_max=1 - CURVE_FLOOR, out_of_bounds="clip")
    fit.fit(probs, [float(r.correct) for r in records])
    return AnswerCalibration(temperature, tuple(fit.X_thresholds_.tolist()), tuple(fit.y_thresholds_.tolist()))


def calibrate(model, tokenizer, items: list[ReasoningItem], batch_size: int = 32, isotonic: bool = True) -> dict:
    """Fits the calibration on `items`; returns it (`AnswerCalibration.to_dict`) with the ECE before, after the
    temperature and after the whole calibration, all measured on the same items (so "after" flatters the fit:
    the evaluation's ECE on other items is the honest number)."""
    records = answer_records(model, tokenizer, items, batch_size)
    calibration = fit_calibration(records, isotonic)
    correct = [r.correct for r in records]

    def ece(confidences: list[float]) -> float:
        return expected_calibration_error(confidences, correct, ECE_BINS)

    at_temperature = [r.prob(calibration.temperature) for r in records]
    return {
        **calibration.to_dict(),
        "n_items": len(items),
        "n_answered": len(records),
        "accuracy_of_answered": sum(correct) / len(correct),
        f"ece{ECE_BINS}_before": ece([r.prob() for r in records]),
        f"ece{ECE_BINS}_temperature": ece(at_temperature),
        f"ece{ECE_BINS}_after": ece([calibration.recalibrate(p) for p in at_temperature]),
    }


def save_calibration(folder: str | Path, result: dict, fitted_on: str) -> Path:
    path = Path(folder) / CALIBRATION_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**result, "fitted_on": fitted_on}, indent=2) + "\n")
    tmp.replace(path)
    return path


def load_calibration(folder: str | Path) -> AnswerCalibration | None:
    """The stored calibration of a local model folder, or None (not calibrated, or not a local folder). A file
    from before the isotonic curve (temperature only) loads as the temperature alone."""
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        return AnswerCalibration.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} is malformed ({error}); delete it or run `sage-nano calibrate` again") from error
