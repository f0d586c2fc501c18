"""Calibration for an introspection run: step confidences at a temperature, the calibration set and what it fits."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace

import torch
from tqdm import tqdm

from ...data import generate_items, parse_answer, prompt_text
from ...data.format import ANSWER
from ...data.schema import ReasoningItem
from ...decoding import Chain, room_after
from ...generation import trace_generate
from ...inverse.answers import marked_answer_tokens
from ...inverse.calibration import TEMPERATURE_GRID, AnswerRecord, fit_calibration
from ...inverse.confidence import AnswerCalibration
from .metrics import ece
from .settings import IntrospectionSettings


@torch.no_grad()
def chain_logits(model, chain: Chain) -> torch.Tensor:
    """(T, V) teacher-forced logits: row t predicts generated token t."""
    inputs = chain.inputs[None].to(model.device)
    return model(input_ids=inputs, use_cache=False, logits_to_keep=len(chain.token_ids)).logits[0].float().cpu()


def step_confidence_at(logits: torch.Tensor, ids: torch.Tensor, temperatures: torch.Tensor) -> torch.Tensor:
    """(G,) mean token probability of a step (its logits (n, V) and tokens (n,)) at each temperature."""
    result = []
    for chunk in temperatures.split(32):
        logp = (logits[None] / chunk[:, None, None]).log_softmax(-1)  # (g, n, V)
        result.append(logp.gather(2, ids[None, :, None].expand(len(chunk), -1, 1))[..., 0].exp().mean(1))
    return torch.cat(result)


@torch.no_grad()
def calibration_set(
    model,
    tokenizer,
    items: list[ReasoningItem],
    settings: IntrospectionSettings,
    batch_size: int = 16,
    progress: bool = True,
):
    """Greedy chains of the calibration items (batched, as `calibrate` does) and, from one teacher-forced pass
    each: answer records (the library's `AnswerRecord`) and, per reasoning step, its mean token probability at
    every grid temperature with its correctness."""
    answers, steps = [], []
    batches = range(0, len(items), batch_size)
    for start in tqdm(batches, desc="calibration set", leave=False, disable=not progress):
        chunk = items[start : start + batch_size]
        prompts = [prompt_text(item.question) for item in chunk]
        longest = max(len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts)
        room = room_after(model, longest, settings.max_new_tokens)
        traces = trace_generate(model, tokenizer, prompts, max_new_tokens=room, attention="none", chat=False)
        for item, trace in zip(chunk, traces, strict=True):
            logits = chain_logits(model, Chain(trace.prompt_ids, trace.token_ids))
            span = marked_answer_tokens(trace)
            if span is not None:
                correct = parse_answer(trace.text) == item.answer
                answers.append(AnswerRecord(logits[span[0] : span[1]], trace.token_ids[span[0] : span[1]], correct))
            end = trace.text.index(ANSWER) if ANSWER in trace.text else len(trace.text)
            for k, step in enumerate(s for s in trace.steps if s.char_end <= end):
                rows = range(step.token_start, step.token_end)
                confidence = step_confidence_at(logits[list(rows)], trace.token_ids[list(rows)], TEMPERATURE_GRID)
                steps.append((confidence, k < len(item.steps) and step.text == item.steps[k]))
    return answers, steps


def fit_step_temperature(records: list[tuple[torch.Tensor, bool]]) -> float | None:
    """The grid temperature minimising the log-loss of step correctness (eps 1e-6, as `fit_temperature`)."""
    if not records:
        return None
    confidence = torch.stack([c for c, _ in records]).clamp(1e-6, 1 - 1e-6)  # (S, G)
    correct = torch.tensor([ok for _, ok in records], dtype=torch.float)[:, None]
    loss = -(correct * confidence.log() + (1 - correct) * (1 - confidence).log()).mean(0)
    return float(TEMPERATURE_GRID[int(loss.argmin())])


def _describe(calibration: AnswerCalibration | None) -> dict:
    """The answer calibration as the run's record shows it."""
    return {
        "answer_temperature": calibration.temperature if calibration else None,
        "answer_calibration": calibration.method if calibration else None,
        "answer_curve_points": len(calibration.curve_x) if calibration else 0,
    }


def calibrate_run(
    model,
    tokenizer,
    loaded: AnswerCalibration | None,
    tasks: Sequence[str],
    settings: IntrospectionSettings,
    progress: bool = True,
) -> tuple[dict, IntrospectionSettings]:
    """Fits what this run needs on the calibration set; returns what it did and the settings with the run's
    answer calibration and step temperature."""
    info: dict = {"calibration_items_per_task": settings.calibration_items, "seed": settings.seed + 1000}
    if settings.calibration_items <= 0:
        info["answer_temperature_source"] = "stored" if loaded else "none"
        settings = replace(settings, answer_calibration=loaded, step_temperature=None)
        return {**info, **_describe(loaded), "step_temperature": None}, settings
    items = [i for t in tasks for i in generate_items(t, settings.calibration_items, settings.seed + 1000, "heldout")]
    start = time.perf_counter()
    answers, steps = calibration_set(model, tokenizer, items, settings, progress=progress)
    calibration = None
    if loaded is not None:
        calibration, info["answer_temperature_source"] = loaded, "stored"
    elif answers:
        calibration, info["answer_temperature_source"] = fit_calibration(answers), "fitted"
    else:
        info["answer_temperature_source"] = "none (no calibration chain has an answer)"
    settings = replace(settings, answer_calibration=calibration, step_temperature=fit_step_temperature(steps))
    correct = [r.correct for r in answers]
    return {
        **info,
        **_describe(calibration),
        "step_temperature": settings.step_temperature,
        "n_items": len(items),
        "n_answered": len(answers),
        "n_steps": len(steps),
        "calibration_set_answer_ece_before": ece([r.prob() for r in answers], correct),
        "calibration_set_answer_ece_after": ece([calibration.confidence(r.logits, r.ids) for r in answers], correct)
        if calibration
        else math.nan,
        "seconds": time.perf_counter() - start,
    }, settings
