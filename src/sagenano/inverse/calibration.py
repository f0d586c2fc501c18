"""Calibration: the answer's and each step's confidence, and how unlikely a familiar question is, fitted on a
calibration set and stored with the model.

The answer confidence is P(answer tokens), the product of their probabilities. Calibration divides the logits at the
answer tokens by one temperature T, fitted to minimise the log-loss of "the answer is right" on items that are not the
evaluation items, and then maps P(answer at T) through an isotonic (monotone, piecewise-linear) curve fitted on the
same items to the share of right answers. A step's confidence is its tokens' mean probability; it is calibrated the
same way against "the step is the reference step" (its own temperature and curve). A token's probability is read at
the temperature that makes the reference chains most likely (teacher-forced: the next-token prediction calibrated
against the reference), so tokens, steps and the answer each have a calibrated scale.

Why both: the temperature alone cannot calibrate a mixture of tasks whose accuracies differ while their probabilities
do not (docs/measurements.md); a monotone map can, and it never reorders confidences, so it changes no ranking.

The question bound: the 99th percentile of the calibration questions' mean negative log-likelihood per token, and
the tokens those questions use; a question above the bound, or made of other tokens, is unlike what the model was
trained on, and its report says so. `calibration.json` beside the
weights keeps all of it and what it was fitted on; `load_model` reads it."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..data import parse_answer, prompt_text, training_text
from ..data.format import ANSWER
from ..data.schema import ReasoningItem
from ..decoding import context_length, room_after
from ..generation import trace_generate
from .answers import expected_calibration_error, marked_answer_tokens
from .confidence import Calibration, answer_prob, mean_token_prob

CALIBRATION_FILE = "calibration.json"
CALIBRATION_SEED = 2_000_003  # held-out-style items that are not the evaluation items (EVAL_SEED)
ECE_BINS = 15
TEMPERATURE_GRID = torch.logspace(math.log10(0.05), math.log10(20), 241)  # the temperatures a fit searches
TOKEN_TEMPERATURES = TEMPERATURE_GRID[::4]  # a coarser grid: the token fit reads whole vocabularies at each
CURVE_FLOOR = 0.01  # the isotonic curve stays in [1 %, 99 %]: a few calibration items never make a certainty
QUESTION_NLL_QUANTILE = 0.99  # questions above this share of the calibration questions are called unusual


@dataclass
class AnswerRecord:
    """The logits at one chain's answer tokens, the tokens, and whether the answer was right."""

    logits: torch.Tensor  # (A, V)
    ids: torch.Tensor  # (A,)
    correct: bool

    def prob(self, temperature: float = 1.0) -> float:
        return answer_prob(self.logits, self.ids, temperature)


@dataclass
class StepRecord:
    """The logits at one reasoning step's tokens, the tokens, and whether the step is the reference step."""

    logits: torch.Tensor  # (n, V)
    ids: torch.Tensor  # (n,)
    correct: bool

    def prob(self, temperature: float = 1.0) -> float:
        return mean_token_prob(self.logits, self.ids, temperature)


@dataclass
class CalibrationSet:
    """What a calibration fits on: answers, reasoning steps and each question's mean NLL per token."""

    answers: list[AnswerRecord]
    steps: list[StepRecord]
    question_nlls: list[float]
    question_token_ids: set[int]
    reference_nll: torch.Tensor  # (G,) the reference chains' summed token NLL at each `TOKEN_TEMPERATURES`
    reference_tokens: int  # how many tokens that sum is over


@torch.no_grad()
def calibration_records(model, tokenizer, items: list[ReasoningItem], batch_size: int = 32) -> CalibrationSet:
    """Greedy chains for the items, and from one teacher-forced pass each: the answer's logits (chains without an
    answer count as wrong with confidence 0 and are left out of the fit), each reasoning step's logits with whether
    it is the reference step, and the question's mean negative log-likelihood per token."""
    found = CalibrationSet([], [], [], set(), torch.zeros(len(TOKEN_TEMPERATURES)), 0)
    for start in tqdm(range(0, len(items), batch_size), desc="calibration set", leave=False):
        chunk = items[start : start + batch_size]
        prompts = [prompt_text(item.question) for item in chunk]
        longest = max(len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts)
        room = room_after(model, longest, 200)
        traces = trace_generate(model, tokenizer, prompts, max_new_tokens=room, attention="none", chat=False)
        for item, trace in zip(chunk, traces, strict=True):
            ids = torch.cat([trace.prompt_ids, trace.token_ids])
            logits = model(ids[None].to(model.device), use_cache=False).logits[0].float().cpu()
            found.question_nlls.append(question_nll(logits, trace.prompt_ids))
            found.question_token_ids.update(trace.prompt_ids.tolist())
            chain_logits = logits[len(trace.prompt_ids) - 1 : -1]  # row t predicts generated token t
            span = marked_answer_tokens(trace)
            if span is not None:
                correct = parse_answer(trace.text) == item.answer
                found.answers.append(
                    AnswerRecord(chain_logits[span[0] : span[1]], trace.token_ids[span[0] : span[1]], correct)
                )
            end = trace.text.index(ANSWER) if ANSWER in trace.text else len(trace.text)
            for k, step in enumerate(s for s in trace.steps if s.char_end <= end and s.token_end > s.token_start):
                rows = slice(step.token_start, step.token_end)
                reference = k < len(item.steps) and step.text == item.steps[k]
                found.steps.append(StepRecord(chain_logits[rows], trace.token_ids[rows], reference))
            nll, count = reference_token_nll(model, tokenizer, item)
            found.reference_nll += nll
            found.reference_tokens += count
    return found


@torch.no_grad()
def reference_token_nll(model, tokenizer, item: ReasoningItem) -> tuple[torch.Tensor, int]:
    """The item's reference chain teacher-forced: its tokens' summed negative log-likelihood at each of
    `TOKEN_TEMPERATURES` (G,), and how many tokens (none when it does not fit the model's context)."""
    prompt = tokenizer(prompt_text(item.question), add_special_tokens=False).input_ids
    ids = torch.tensor(tokenizer(training_text(item), add_special_tokens=False).input_ids)
    if len(ids) > (context_length(model) or len(ids)):  # a reference longer than the context is left out
        return torch.zeros(len(TOKEN_TEMPERATURES)), 0
    logits = model(ids[None].to(model.device), use_cache=False).logits[0, len(prompt) - 1 : -1].float().cpu()
    targets = ids[len(prompt) :, None]
    nll = [
        -(logits[None] / chunk[:, None, None]).log_softmax(-1).gather(2, targets.expand(len(chunk), -1, 1)).sum((1, 2))
        for chunk in TOKEN_TEMPERATURES.split(8)
    ]
    return torch.cat(nll), len(targets)


def question_nll(logits: torch.Tensor, prompt_ids: torch.Tensor) -> float:
    """The prompt's mean negative log-likelihood per token after its first, from the logits (N, V) of a pass over
    a sequence that starts with it."""
    if len(prompt_ids) < 2:
        return 0.0
    logp = logits[: len(prompt_ids) - 1].float().log_softmax(-1)
    return float(-logp.gather(1, prompt_ids[1:, None].to(logp.device)).mean())


Record = AnswerRecord | StepRecord


def fit_temperature(records: Sequence[Record]) -> float:
    """The temperature of `TEMPERATURE_GRID` (0.05 to 20) that minimises the log-loss of correctness."""
    if not records:
        raise ValueError("no answered items to calibrate on")
    return min(TEMPERATURE_GRID.tolist(), key=lambda t: _log_loss(records, t))


def _log_loss(records: Sequence[Record], temperature: float) -> float:
    eps = 1e-6
    total = 0.0
    for record in records:
        p = min(max(record.prob(temperature), eps), 1 - eps)
        total -= math.log(p) if record.correct else math.log(1 - p)
    return total / len(records)


def fit_curve(probs: Sequence[float], correct: Sequence[bool]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """scikit-learn's isotonic regression of correctness on the probabilities, kept within [CURVE_FLOOR, 1 -
    CURVE_FLOOR]: its points (x, y)."""
    try:
        from sklearn.isotonic import IsotonicRegression
    except ImportError as error:
        raise ImportError("fitting the isotonic curve needs scikit-learn: pip install 'sagenano[eval]'") from error
    fit = IsotonicRegression(y_min=CURVE_FLOOR, y_max=1 - CURVE_FLOOR, out_of_bounds="clip")
    fit.fit(list(probs), [float(c) for c in correct])
    return tuple(fit.X_thresholds_.tolist()), tuple(fit.y_thresholds_.tolist())


def _temperature_and_curve(records: Sequence[Record], isotonic: bool) -> tuple[float, tuple, tuple]:
    temperature = fit_temperature(records)
    if not isotonic:
        return temperature, (), ()
    return temperature, *fit_curve([r.prob(temperature) for r in records], [r.correct for r in records])


def fit_calibration(
    answers: list[AnswerRecord],
    isotonic: bool = True,
    steps: Sequence[StepRecord] = (),
    question_nlls: Sequence[float] = (),
    question_token_ids: set[int] | None = None,
    reference_nll: torch.Tensor | None = None,
) -> Calibration:
    """The answer's temperature (`fit_temperature`) and, when `isotonic`, its curve; the same for the steps when
    there are step records; the question bound when there are question NLLs, and the questions' tokens; the token
    temperature (the one of `TOKEN_TEMPERATURES` that minimises `reference_nll`) when given."""
    temperature, x, y = _temperature_and_curve(answers, isotonic)
    step_temperature, step_x, step_y = _temperature_and_curve(steps, isotonic) if steps else (None, (), ())
    bound = None
    if question_nlls:
        bound = float(torch.tensor(list(question_nlls)).quantile(QUESTION_NLL_QUANTILE))
    seen = tuple(sorted(question_token_ids or ()))
    token_temperature = None if reference_nll is None else float(TOKEN_TEMPERATURES[int(reference_nll.argmin())])
    return Calibration(temperature, x, y, step_temperature, step_x, step_y, bound, seen, token_temperature)


def _eces(records: Sequence[Record], temperature: float | None, recalibrate: Callable[[float], float]) -> dict:
    """ECE before calibration, at the temperature alone, and after the whole calibration, on `records`."""
    correct = [r.correct for r in records]

    def ece(confidences: list[float]) -> float:
        return expected_calibration_error(confidences, correct, ECE_BINS)

    at_temperature = [r.prob(temperature) for r in records] if temperature else []
    return {
        "before": ece([r.prob() for r in records]),
        "temperature": ece(at_temperature) if temperature else math.nan,
        "after": ece([recalibrate(p) for p in at_temperature]) if temperature else math.nan,
    }


def calibrate(model, tokenizer, items: list[ReasoningItem], batch_size: int = 32, isotonic: bool = True) -> dict:
    """Fits the calibration on `items`; returns it (`Calibration.to_dict`) with the answer's and the steps' ECE
    before, after the temperature and after the whole calibration, all measured on the same items (so "after"
    flatters the fit: the evaluation's ECE on other items is the honest number)."""
    found = calibration_records(model, tokenizer, items, batch_size)
    calibration = fit_calibration(
        found.answers, isotonic, found.steps, found.question_nlls, found.question_token_ids, found.reference_nll
    )
    answer_ece = _eces(found.answers, calibration.temperature, calibration.recalibrate)
    step_ece = _eces(found.steps, calibration.step_temperature, calibration.recalibrate_step)
    correct = [r.correct for r in found.answers]
    return {
        **calibration.to_dict(),
        "n_items": len(items),
        "n_answered": len(found.answers),
        "n_steps": len(found.steps),
        "n_reference_tokens": found.reference_tokens,
        "reference_token_nll_before": float(found.reference_nll[_grid_index(1.0)]) / max(found.reference_tokens, 1),
        "reference_token_nll_after": float(found.reference_nll.min()) / max(found.reference_tokens, 1),
        "accuracy_of_answered": sum(correct) / len(correct),
        **{f"ece{ECE_BINS}_{name}": value for name, value in answer_ece.items()},
        **{f"step_ece{ECE_BINS}_{name}": value for name, value in step_ece.items()},
    }


def _grid_index(temperature: float) -> int:
    return int((TOKEN_TEMPERATURES - temperature).abs().argmin())


def save_calibration(folder: str | Path, result: dict, fitted_on: str) -> Path:
    path = Path(folder) / CALIBRATION_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**result, "fitted_on": fitted_on}, indent=2) + "\n")
    tmp.replace(path)
    return path


def load_calibration(folder: str | Path) -> Calibration | None:
    """The stored calibration of a local model folder, or None (not calibrated, or not a local folder). A file
    from before the isotonic curve or the step calibration loads with what it has."""
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        return Calibration.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} is malformed ({error}); delete it or run `sage-nano calibrate` again") from error
