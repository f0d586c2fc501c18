"""The calibration an introspection run reads its confidences with: the model's stored one, or one fitted here.

One home for calibration: the calibration set and its fit are the library's (`inverse.calibration`); this module only
decides which calibration the run uses and records what it did."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace

from ...data import generate_items
from ...inverse.calibration import CalibrationSet, calibration_records, fit_calibration
from ...inverse.confidence import Calibration
from .metrics import ece
from .settings import IntrospectionSettings


def describe(calibration: Calibration | None) -> dict:
    """The calibration as the run's record shows it."""
    return {
        "answer_temperature": calibration.temperature if calibration else None,
        "answer_calibration": calibration.method if calibration else None,
        "answer_curve_points": len(calibration.curve_x) if calibration else 0,
        "step_temperature": calibration.step_temperature if calibration else None,
        "step_curve_points": len(calibration.step_curve_x) if calibration else 0,
        "question_nll_bound": calibration.question_nll_bound if calibration else None,
    }


def calibration_set_eces(found: CalibrationSet, calibration: Calibration | None) -> dict:
    """ECE of the answers and steps of the calibration set, raw and after `calibration` (which was fitted on them,
    so "after" flatters it: the own chains' ECE is the honest number)."""
    answers, steps = [r.correct for r in found.answers], [r.correct for r in found.steps]
    answer_after = step_after = math.nan
    if calibration is not None:
        answer_after = ece([calibration.confidence(r.logits, r.ids) for r in found.answers], answers)
        if calibration.step_temperature is not None:
            step_after = ece([calibration.step_confidence(r.logits, r.ids) for r in found.steps], steps)
    return {
        "calibration_set_answer_ece_before": ece([r.prob() for r in found.answers], answers),
        "calibration_set_answer_ece_after": answer_after,
        "calibration_set_step_ece_before": ece([r.prob() for r in found.steps], steps),
        "calibration_set_step_ece_after": step_after,
    }


def calibrate_run(
    model,
    tokenizer,
    loaded: Calibration | None,
    tasks: Sequence[str],
    settings: IntrospectionSettings,
) -> tuple[dict, IntrospectionSettings]:
    """The run's calibration: the stored one (`loaded`) when it calibrates steps too, else all of it (answer, steps,
    question bound) fitted by `fit_calibration` on `calibration_items` held-out items per task (seed `seed` + 1000);
    with no calibration items, or no calibration chain with an answer, the stored one as it is. Returns what it did
    and the settings with the run's calibration."""
    info: dict = {"calibration_items_per_task": settings.calibration_items, "seed": settings.seed + 1000}
    stored = "stored" if loaded else "none"
    if loaded is not None and loaded.step_temperature is not None:
        return {**info, "source": "stored", **describe(loaded)}, replace(settings, calibration=loaded)
    if settings.calibration_items <= 0:
        return {**info, "source": stored, **describe(loaded)}, replace(settings, calibration=loaded)
    items = [i for t in tasks for i in generate_items(t, settings.calibration_items, settings.seed + 1000, "heldout")]
    start = time.perf_counter()
    found = calibration_records(model, tokenizer, items)
    if found.answers:
        calibration = fit_calibration(
            found.answers, True, found.steps, found.question_nlls, found.question_token_ids, found.reference_nll
        )
        source = "fitted"
    else:
        calibration, source = loaded, f"{stored} (no calibration chain has an answer to fit on)"
    return {
        **info,
        "source": source,
        **describe(calibration),
        "n_items": len(items),
        "n_answered": len(found.answers),
        "n_steps": len(found.steps),
        **calibration_set_eces(found, calibration),
        "seconds": time.perf_counter() - start,
    }, replace(settings, calibration=calibration)
