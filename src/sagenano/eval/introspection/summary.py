"""Summaries of measured items per part and ranking method, and the goals the overall numbers are held to."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ...inverse import ExplainOptions
from ..rank_correlation import spearman
from .metrics import ENGINE_RANKINGS, ece, mean, share
from .settings import PARTS

THRESHOLD = ExplainOptions().threshold  # the engine's default decision threshold (0.3)
STEP_SCORES = ("entropy", "meta", "combined", "position")  # the step scores correlated with the effect
GOAL_TOP1, GOAL_DISTRACTOR, GOAL_VERIFIED, GOAL_ECE = 0.90, 0.05, 0.95, 0.05


def summarise_dependency(results: list[dict], methods: Sequence[str]) -> dict:
    steps = [s for r in results for s in r.get("dependency", [])]
    with_distractors = [s for r in results if r["has_distractors"] for s in r.get("dependency", [])]
    return {
        m: {
            "steps": len(steps),
            "top1": share([s[m]["top1"] for s in steps]),
            "precision@3": mean([s[m]["precision"] for s in steps]),
            "recall@3": mean([s[m]["recall"] for s in steps]),
            "distractor_steps": len(with_distractors),
            "distractor_wins": share([s[m]["distractor_win"] for s in with_distractors]),
        }
        for m in methods
    }


def summarise_alternatives(results: list[dict], key: str) -> dict:
    rows = [r[key] for r in results if key in r]
    total = sum(r["alternatives"] for r in rows)
    verified = sum(r["verified"] for r in rows)
    return {
        "items": len(rows),
        "decision_points": sum(r["decision_points"] for r in rows),
        "alternatives": total,
        "verified": verified,
        "verified_share": verified / total if total else math.nan,
    }


def summarise_decision(results: list[dict]) -> dict:
    rows = [r["decision"] for r in results if "decision" in r]
    steps = [s for d in rows for s in d["steps"]]
    effect = [s["effect"] for s in steps]
    correlations = {}
    for score in STEP_SCORES:
        values = [s[score] for s in steps]
        correlations[score] = math.nan if any(v is None for v in values) else spearman(values, effect)
    return {
        "items": len(rows),
        "skipped": sum(d["skipped"] is not None for d in rows),
        "steps": len(steps),
        "mean_effect": mean(effect),
        "spearman": correlations,
    }


def summarise_calibration(results: list[dict]) -> dict:
    rows = [r["calibration"] for r in results if "calibration" in r]
    steps = [s for r in rows for s in r["steps"]]
    correct = [r["correct"] for r in rows]
    step_correct = [s["correct"] for s in steps]
    after = None if any(r["calibrated"] is None for r in rows) else [r["calibrated"] for r in rows]
    step_after = None if any(s["calibrated"] is None for s in steps) else [s["calibrated"] for s in steps]
    return {
        "items": len(rows),
        "answered": sum(r["answered"] for r in rows),
        "accuracy": share(correct),
        "answer_ece_before": ece([r["confidence"] for r in rows], correct),
        "answer_ece_after": math.nan if after is None else ece(after, correct),
        "steps": len(steps),
        "step_accuracy": share(step_correct),
        "step_ece_before": ece([s["confidence"] for s in steps], step_correct),
        "step_ece_after": math.nan if step_after is None else ece(step_after, step_correct),
    }


def summarise_faithfulness(results: list[dict], methods: Sequence[str]) -> dict:
    steps = [s for r in results for s in r.get("faithfulness", [])]
    keys = ("comprehensiveness", "random_comprehensiveness", "sufficiency", "random_sufficiency", "tokens")
    return {
        "items": sum("faithfulness" in r for r in results),
        "steps": len(steps),
        **{m: {k: mean([s[m][k] for s in steps]) for k in keys} for m in methods},
    }


def summarise_timings(results: list[dict], methods: Sequence[str]) -> dict:
    """Seconds per item of each part, and per explained step of eq. 7 (the engine) and of each baseline."""
    parts = {}
    for part in PARTS:
        values = [r["seconds"][part] for r in results if part in r["seconds"]]
        parts[part] = {"items": len(values), "seconds_per_item": mean(values)}
    timed = {}
    for m in ("eq7", *(m for m in methods if m not in ENGINE_RANKINGS)):
        rows = [r["method_seconds"][m] for r in results if m in r["method_seconds"]]
        steps = sum(row["steps"] for row in rows)
        seconds = sum(row["seconds"] for row in rows)
        timed[m] = {"steps": steps, "seconds": seconds, "seconds_per_step": seconds / steps if steps else math.nan}
    return {"parts": parts, "methods": timed}


def summarise(results: list[dict], methods: Sequence[str] = tuple(ENGINE_RANKINGS)) -> dict:
    """Every part's numbers over `results` (items of one task, or of all), each ranking method of `methods`."""
    return {
        "items": len(results),
        "misaligned": sum(not r["aligned"] for r in results),
        "dependency": summarise_dependency(results, methods),
        "alternatives": summarise_alternatives(results, "alternatives"),
        "alternatives_low": summarise_alternatives(results, "alternatives_low"),
        "decision": summarise_decision(results),
        "calibration": summarise_calibration(results),
        "faithfulness": summarise_faithfulness(results, methods),
        "timings": summarise_timings(results, methods),
    }


def goals(overall: dict) -> list[dict]:
    """Each goal's measured value, target and verdict (NaN, i.e. nothing measured, fails)."""
    dep = overall["dependency"]
    top1 = dep["eq7"]["top1"]
    baseline = max(dep["attention_only"]["top1"], dep["gradient_only"]["top1"])
    verified, verified_low = overall["alternatives"]["verified_share"], overall["alternatives_low"]["verified_share"]
    distractors, answer_ece = dep["eq7"]["distractor_wins"], overall["calibration"]["answer_ece_after"]
    rows = [
        ("dependency top-1 (eq. 7)", "share", top1, f">= {GOAL_TOP1:.0%}", top1 >= GOAL_TOP1),
        ("distractor-wins (eq. 7)", "share", distractors, f"<= {GOAL_DISTRACTOR:.0%}", distractors <= GOAL_DISTRACTOR),
        (
            f"alternatives verified (threshold {THRESHOLD:g})",
            "share",
            verified,
            f">= {GOAL_VERIFIED:.0%}",
            verified >= GOAL_VERIFIED,
        ),
        (
            "alternatives verified (low threshold)",
            "share",
            verified_low,
            f">= {GOAL_VERIFIED:.0%}",
            verified_low >= GOAL_VERIFIED,
        ),
        ("answer ECE after calibration", "value", answer_ece, f"<= {GOAL_ECE}", answer_ece <= GOAL_ECE),
        (
            "eq. 7 top-1 minus best of attention-only and gradient-only",
            "margin",
            top1 - baseline,
            "> 0 (beats both)",
            top1 > baseline,
        ),
    ]
    return [  # a comparison with NaN (nothing measured) is False: FAIL
        {"goal": g, "kind": kind, "measured": v, "target": t, "result": "PASS" if ok else "FAIL"}
        for g, kind, v, t, ok in rows
    ]
