"""Temperature calibration of the answer confidence, fitted on a calibration set and stored with the model.

The answer confidence is P(answer tokens), the product of their probabilities. Calibration divides
the logits at the answer tokens by one temperature T, fitted to minimise the log-loss of "the answer
is right" on items that are not the evaluation items. `calibration.json` beside the weights keeps T
and what it was fitted on; `load_model` reads it and `explain` reports raw and calibrated numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..data import parse_answer, prompt_text
from ..data.schema import ReasoningItem
from ..eval.synthetic import _answer_span, expected_calibration_error
from ..generation import trace_generate

CALIBRATION_FILE = "calibration.json"
CALIBRATION_SEED = 2_000_003  # held-out-style items that are not the evaluation items (EVAL_SEED)
ECE_BINS = 15


@dataclass
class AnswerRecord:
    """The logits at one chain's answer tokens, the tokens, and whether the answer was right."""

    logits: torch.Tensor  # (A, V)
    ids: torch.Tensor  # (A,)
    correct: bool

    def prob(self, temperature: float = 1.0) -> float:
        logp = (self.logits / temperature).log_softmax(-1)
        return math.exp(float(logp.gather(1, self.ids[:, None]).sum()))


@torch.no_grad()
def answer_records(model, tokenizer, items: list[ReasoningItem], batch_size: int = 32) -> list[AnswerRecord]:
    """Greedy chains for the items and the logits at each chain's answer (chains without an answer count
    as wrong with confidence 0 and are left out of the fit)."""
    records = []
    for start in tqdm(range(0, len(items), batch_size), desc="calibration set", leave=False):
        chunk = items[start : start + batch_size]
        prompts = [prompt_text(item.question) for item in chunk]
        longest = max(len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts)
        room = min(200, model.config.max_position_embeddings - longest)
        traces = trace_generate(model, tokenizer, prompts, max_new_tokens=room, attention="none", chat=False)
        for item, trace in zip(chunk, traces, strict=True):
            span = _answer_span(trace)
            if span is None:
                continue
            ids = torch.cat([trace.prompt_ids, trace.token_ids])[None].to(model.device)
            offset = len(trace.prompt_ids) - 1  # the position predicting generated token t is offset + t
            logits = model(ids, use_cache=False).logits[0, offset + span[0] : offset + span[1]].float().cpu()
            correct = parse_answer(trace.text) == item.answer
            records.append(AnswerRecord(logits, trace.token_ids[span[0] : span[1]], correct))
    return records


def fit_temperature(records: list[AnswerRecord]) -> float:
    """The temperature (searched on a log grid from 0.05 to 20) that minimises the log-loss of correctness."""
    if not records:
        raise ValueError("no answered items to calibrate on")
    grid = torch.logspace(math.log10(0.05), math.log10(20), 241).tolist()
    return min(grid, key=lambda t: _log_loss(records, t))


def _log_loss(records: list[AnswerRecord], temperature: float) -> float:
    eps = 1e-6
    total = 0.0
    for record in records:
        p = min(max(record.prob(temperature), eps), 1 - eps)
        total -= math.log(p) if record.correct else math.log(1 - p)
    return total / len(records)


def calibrate(model, tokenizer, items: list[ReasoningItem], batch_size: int = 32) -> dict:
    """Fits the temperature on `items`; returns it with the ECE before and after, measured on the same items."""
    records = answer_records(model, tokenizer, items, batch_size)
    temperature = fit_temperature(records)
    correct = [r.correct for r in records]
    return {
        "temperature": temperature,
        "n_items": len(items),
        "n_answered": len(records),
        "accuracy_of_answered": sum(correct) / len(correct),
        f"ece{ECE_BINS}_before": expected_calibration_error([r.prob() for r in records], correct, ECE_BINS),
        f"ece{ECE_BINS}_after": expected_calibration_error([r.prob(temperature) for r in records], correct, ECE_BINS),
    }


def save_calibration(folder: str | Path, result: dict, fitted_on: str) -> Path:
    path = Path(folder) / CALIBRATION_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**result, "fitted_on": fitted_on}, indent=2) + "\n")
    tmp.replace(path)
    return path


def load_temperature(folder: str | Path) -> float | None:
    """The stored temperature of a local model folder, or None (not calibrated, or not a local folder)."""
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        value = float(json.loads(path.read_text())["temperature"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is malformed ({error}); delete it or run `sage-nano calibrate` again") from error
    if not value > 0:
        raise ValueError(f"{path} holds a non-positive temperature {value}; run `sage-nano calibrate` again")
    return value
