"""Summaries of measured items per part and ranking method, and the goals the overall numbers are held to."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from ...inverse import ExplainOptions
from ...inverse.decisions import DECISION_SCORES
from ..rank_correlation import spearman
from .metrics import ENGINE_RANKINGS, auroc, ece, mean, share
from .settings import PARTS

THRESHOLD = ExplainOptions().threshold  # the engine's default decision threshold
STEP_SCORES = (*DECISION_SCORES, "position")  # the step scores measured against the effect ("position": a baseline)
EFFECT_THRESHOLD = 0.2  # a step "changes the answer" when resampling from it changes >= 20 % of the answers
GOAL_TOP1, GOAL_DISTRACTOR, GOAL_VERIFIED, GOAL_ECE = 0.90, 0.05, 0.95, 0.05
GOAL_SPEARMAN, GOAL_AUROC, GOAL_SHOWN, GOAL_CHANGE_NOTHING, GOAL_PRECISION = 0.7, 0.85, 0.60, 0.10, 0.90


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


def step_score_values(steps: list[dict], score: str) -> list[float] | None:
    """Every step's value of `score`, or None when some step lacks it (meta and combined: SAGE only)."""
    values = [s.get(score) for s in steps]
    return None if not values or any(v is None for v in values) else values


def summarise_decision(results: list[dict]) -> dict:
    """Each step score's Spearman correlation with the resampling effect and its AUROC for "the effect reaches
    `EFFECT_THRESHOLD`"; of the items where some step reaches it, the share whose default report shows a decision
    point; of the decision points shown, the share whose resampling never gives another answer."""
    rows = [r["decision"] for r in results if "decision" in r]
    measured = [d for d in rows if d["skipped"] is None]
    steps = [s for d in measured for s in d["steps"]]
    effect = [s["effect"] for s in steps]
    changing = [e >= EFFECT_THRESHOLD for e in effect]
    values = {score: step_score_values(steps, score) for score in STEP_SCORES}
    defaults = Counter(d["default_score"] for d in measured).most_common(1)
    return {
        "items": len(rows),
        "skipped": len(rows) - len(measured),
        "steps": len(steps),
        "changing_steps": sum(changing),
        "mean_effect": mean(effect),
        "default_score": defaults[0][0] if defaults else None,
        "spearman": {k: math.nan if v is None else spearman(v, effect) for k, v in values.items()},
        "auroc": {k: math.nan if v is None else auroc(v, changing) for k, v in values.items()},
        **summarise_shown(measured),
    }


def summarise_shown(measured: list[dict]) -> dict:
    """Whether the default report shows a decision point where resampling finds a step that changes the answer (and
    where it finds none), and whether the decision points it shows change anything; `measured`: decision records
    that were not skipped."""
    change = [any(s["effect"] >= EFFECT_THRESHOLD for s in d["steps"]) for d in measured]
    shows = [len(d["shown"]) > 0 for d in measured]
    points = [p for d in measured for p in d["shown"]]
    return {
        "items_with_change": sum(change),
        "shown_share": share([s for s, c in zip(shows, change, strict=True) if c]),
        "shown_without_change": share([s for s, c in zip(shows, change, strict=True) if not c]),
        "shown_points": len(points),
        "change_nothing_share": share([p["other_answers"] == 0 for p in points]),
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


def summarise_claims(results: list[dict]) -> dict:
    """Causal claims verified before and after refinement (pooled over the own reports), and the precision against
    the ground truth of those shown as verified: dependency claims on own chains that are the gold chain, alternative
    claims by the independent sampling check."""
    rows = [r["claims"] for r in results if "claims" in r]
    dependencies = [d for c in rows for d in c["dependencies"] if d["true"] is not None]
    shown = [d["true"] for d in dependencies if d["status"] == "verified"]
    refuted = [d["true"] for d in dependencies if d["status"] == "refuted"]
    alternatives = [a["confirmed"] for c in rows for a in c["alternatives"]]
    judged = shown + alternatives
    before, after = sum(c["causal_before"] for c in rows), sum(c["causal_after"] for c in rows)
    verified_before, verified_after = sum(c["verified_before"] for c in rows), sum(c["verified_after"] for c in rows)
    return {
        "items": len(rows),
        "aligned": sum(c["aligned"] for c in rows),
        "causal_before": before,
        "verified_before": verified_before,
        "verified_share_before": verified_before / before if before else math.nan,
        "causal_after": after,
        "verified_after": verified_after,
        "verified_share_after": verified_after / after if after else math.nan,
        "dependency_claims": len(shown),
        "dependency_precision": share(shown),
        "answer_step_dependencies": sum(d["true"] is None for c in rows for d in c["dependencies"]),
        "refuted_dependencies": len(refuted),
        "refuted_true_share": share(refuted),
        "alternative_claims": len(alternatives),
        "alternative_precision": share(alternatives),
        "claims_judged": len(judged),
        "precision": share(judged),
    }


def summarise_reliance(results: list[dict]) -> dict:
    """The Lanham et al. tests over the own reports that have them: how often the answer needs the chain (early
    answering settles it only after >= 1 step), a mistake or filler changes the answer, and after what share of the
    chain's steps the answer settles."""
    rows = [r["reliance"] for r in results if r.get("reliance")]
    settled = [r for r in rows if r["settled_after"] is not None]
    mistakes = sum(r["mistakes"] for r in rows)
    filler = [r["filler_changed"] for r in rows if r["filler_changed"] is not None]
    return {
        "items": len(rows),
        "unsettled": len(rows) - len(settled),
        "needs_chain": share([r["settled_after"] > 0 for r in settled]),
        "mistakes": mistakes,
        "mistakes_changed_share": sum(r["mistakes_changed"] for r in rows) / mistakes if mistakes else math.nan,
        "filler_runs": len(filler),
        "filler_changed_share": share(filler),
        "settled_fraction": mean([r["settled_after"] / r["steps"] for r in settled if r["steps"]]),
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
        "misaligned": sum(r.get("aligned") is False for r in results),
        "dependency": summarise_dependency(results, methods),
        "alternatives": summarise_alternatives(results, "alternatives"),
        "alternatives_low": summarise_alternatives(results, "alternatives_low"),
        "decision": summarise_decision(results),
        "calibration": summarise_calibration(results),
        "claims": summarise_claims(results),
        "reliance": summarise_reliance(results),
        "faithfulness": summarise_faithfulness(results, methods),
        "timings": summarise_timings(results, methods),
    }


def goals(overall: dict) -> list[dict]:
    """Each goal's measured value, target and verdict (NaN, i.e. nothing measured, fails)."""
    dep, decision, calibration = overall["dependency"], overall["decision"], overall["calibration"]
    top1 = dep["eq7"]["top1"]
    baseline = max(dep["attention_only"]["top1"], dep["gradient_only"]["top1"])
    verified, verified_low = overall["alternatives"]["verified_share"], overall["alternatives_low"]["verified_share"]
    distractors = dep["eq7"]["distractor_wins"]
    default = decision.get("default_score")
    rho = decision["spearman"].get(default, math.nan) if default else math.nan
    area = decision["auroc"].get(default, math.nan) if default else math.nan
    shown, nothing = decision["shown_share"], decision["change_nothing_share"]
    precision = overall["claims"]["precision"]
    answer_ece, step_ece = calibration["answer_ece_after"], calibration["step_ece_after"]
    changes = f"effect >= {EFFECT_THRESHOLD:g}"
    rows = [
        ("dependency top-1 (eq. 7)", "share", top1, f">= {GOAL_TOP1:.0%}", top1 >= GOAL_TOP1),
        ("distractor-wins (eq. 7)", "share", distractors, f"<= {GOAL_DISTRACTOR:.0%}", distractors <= GOAL_DISTRACTOR),
        (f"alternatives verified (threshold {THRESHOLD:g})", "share", verified, f">= {GOAL_VERIFIED:.0%}",
         verified >= GOAL_VERIFIED),
        ("alternatives verified (low threshold)", "share", verified_low, f">= {GOAL_VERIFIED:.0%}",
         verified_low >= GOAL_VERIFIED),
        (f"decision score ({default}) Spearman vs resampling effect", "value", rho, f">= {GOAL_SPEARMAN}",
         rho >= GOAL_SPEARMAN),
        (f"decision score ({default}) AUROC for {changes}", "value", area, f">= {GOAL_AUROC}", area >= GOAL_AUROC),
        (f"items with a step of {changes}: default report shows >= 1 decision point", "share", shown,
         f">= {GOAL_SHOWN:.0%}", shown >= GOAL_SHOWN),
        ("shown decision points whose resampling changes nothing", "share", nothing,
         f"<= {GOAL_CHANGE_NOTHING:.0%}", nothing <= GOAL_CHANGE_NOTHING),
        ("causal-claim precision against ground truth", "share", precision, f">= {GOAL_PRECISION:.0%}",
         precision >= GOAL_PRECISION),
        ("answer ECE after calibration", "value", answer_ece, f"<= {GOAL_ECE}", answer_ece <= GOAL_ECE),
        ("step ECE after calibration", "value", step_ece, f"<= {GOAL_ECE}", step_ece <= GOAL_ECE),
        ("eq. 7 top-1 minus best of attention-only and gradient-only", "margin", top1 - baseline,
         "> 0 (beats both)", top1 > baseline),
    ]  # fmt: skip
    return [  # a comparison with NaN (nothing measured) is False: FAIL
        {"goal": g, "kind": kind, "measured": v, "target": t, "result": "PASS" if ok else "FAIL"}
        for g, kind, v, t, ok in rows
    ]
