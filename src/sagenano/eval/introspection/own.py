"""Measuring the model's own chain: alternatives, causal claims against the ground truth, calibration, reliance on
the chain, and decision points against the measured effect of resampling."""

from __future__ import annotations

import torch

from ...data import parse_answer
from ...data.format import ANSWER
from ...data.schema import ReasoningItem
from ...decoding import Chain, eos_ids, padded_batch, room_after
from ...inverse import Report
from ...inverse.alternatives import sampled_answers
from ...inverse.answers import outcome
from ...inverse.decisions import (
    DECISION_SCORES,
    TokenUncertainty,
    decision_scores,
    meta_at_step_starts,
    step_separators,
)
from ...inverse.measure import score_chain
from .items import aligned, item_seed
from .metrics import is_true_dependency
from .settings import IntrospectionSettings

META_SCORES = ("meta", "combined")  # the decision scores that need SAGE's meta-cognitive head


def answer_step(report: Report):
    """The answer step when the chain writes `<|answer|>`, else None."""
    if ANSWER not in report.chain:
        return None
    return next((s for s in report.steps if s.is_answer), None)


def reasoning_steps(report: Report) -> list:
    """The steps with tokens before the answer step (all of them when the chain writes no `<|answer|>`)."""
    last = answer_step(report)
    return [s for s in report.steps if (last is None or s.index < last.index) and s.token_end > s.token_start]


# --- alternatives, calibration and reliance: read from the report ------------------------------------------------


def alternative_counts(report: Report) -> dict:
    """Alternative claims and how many were verified (claims refinement removed count, as refuted)."""
    removed = report.validation.removed_claims if report.validation else []
    claims = [c for c in [*report.claims, *removed] if c.kind == "alternative"]
    return {
        "decision_points": len(report.decision_points),
        "alternatives": len(claims),
        "verified": sum(c.status == "verified" for c in claims),
    }


def calibration_record(report: Report, item: ReasoningItem) -> dict:
    """The own chain's answer and step confidences, raw and as the report calibrated them, with their correctness.
    A chain without an answer is wrong at confidence 0; "calibrated" is None where the report is not calibrated."""
    answered = answer_step(report) is not None
    calibrated = None
    if report.calibration is not None:
        calibrated = (report.calibrated_answer_confidence or 0.0) if answered else 0.0
    return {
        "answered": answered,
        "correct": answered and parse_answer(report.chain) == item.answer,
        "confidence": report.answer_confidence if answered and report.answer_confidence is not None else 0.0,
        "calibrated": calibrated,
        "steps": [
            {
                "confidence": step.confidence,
                "calibrated": step.calibrated_confidence,
                "correct": step.index < len(item.steps) and step.text == item.steps[step.index],
            }
            for step in reasoning_steps(report)
        ],
    }


def reliance_record(report: Report) -> dict | None:
    """The Lanham et al. tests of the report (`report.reliance`); None when they were not measured."""
    reliance = report.reliance
    if reliance is None:
        return None
    return {
        "steps": len(reliance.early_answers) - 1,  # cuts after 0 .. n steps
        "settled_after": reliance.settled_after,
        "mistakes": len(reliance.mistakes),
        "mistakes_changed": sum(m.changed_answer for m in reliance.mistakes),
        "filler_changed": None if reliance.filler is None else reliance.filler.changed_answer,
        "rests_on_chain": reliance.rests_on_chain,
    }


# --- causal claims against the ground truth -----------------------------------------------------------------------


def claim_records(model, tokenizer, report: Report, item: ReasoningItem, settings: IntrospectionSettings) -> dict:
    """The report's causal claims verified before and after refinement, and those a user reads as facts judged
    against the ground truth: each verified dependency claim (when the own chain is the gold chain) against the gold
    dependencies, each verified alternative claim against `check_samples` continuations sampled with another seed."""
    removed = report.validation.removed_claims if report.validation else []
    after = [c for c in report.claims if c.category == "causal"]
    before = [c for c in after if c.replaces is None] + [c for c in removed if c.category == "causal"]
    is_gold = aligned(report, item)
    return {
        "aligned": is_gold,
        "causal_before": len(before),
        "verified_before": sum(c.status == "verified" for c in before),
        "causal_after": len(after),
        "verified_after": sum(c.status == "verified" for c in after),
        "dependencies": dependency_truth(report, item) if is_gold else [],
        "alternatives": alternative_checks(model, tokenizer, report, settings, item_seed(settings, item) + 1),
    }


def dependency_truth(report: Report, item: ReasoningItem) -> list[dict]:
    """Every checked dependency claim (shown, and refuted) of a report on the gold chain: whether its span is a gold
    dependency of its step (None for the answer step, which has no gold dependencies)."""
    removed = report.validation.removed_claims if report.validation else []
    claims = [c for c in [*report.claims, *removed] if c.kind == "dependency" and c.status != "unchecked"]
    steps = {s.index: s for s in report.steps}
    records = []
    for claim in claims:
        span = next(d.span for d in steps[claim.step].dependencies if d.span.positions == claim.stated["positions"])
        gold = item.dependencies[claim.step] if claim.step < len(item.dependencies) else None
        records.append(
            {
                "step": claim.step,
                "text": span.text,
                "status": claim.status,
                "repair": claim.replaces is not None,
                "true": None if gold is None else is_true_dependency(span, gold),
            }
        )
    return records


def alternative_checks(model, tokenizer, report: Report, settings: IntrospectionSettings, seed: int) -> list[dict]:
    """Every verified alternative claim checked apart from validation: `check_samples` continuations sampled after
    the forced token (generator seeded with `seed`); confirmed when most end with the stated outcome."""
    claims = [c for c in report.claims if c.kind == "alternative" and c.status == "verified"]
    if not claims:
        return []
    branches = list(dict.fromkeys((c.stated["position"], c.stated["token_id"]) for c in claims))
    options = report.options
    answers = sampled_answers(
        model,
        tokenizer,
        Chain.from_report(report),
        branches,
        settings.check_samples,
        seed,
        options.max_new_tokens,
        options.rollout_memory_mb,
    )
    records = []
    for claim in claims:
        position, stated = claim.stated["position"], claim.stated["outcome"]
        found = answers[(position, claim.stated["token_id"])]
        agree = sum(outcome(answer, report.answer) == stated for answer in found) / len(found)
        records.append({"position": position, "outcome": stated, "agreement": agree, "confirmed": agree > 0.5})
    return records


# --- decision points ---------------------------------------------------------------------------------------------


@torch.no_grad()
def resampled_answers(
    model, tokenizer, chain: Chain, starts: list[int], settings: IntrospectionSettings, seed: int
) -> list:
    """For each start (a generated-token index), the answers of `resamples` sampled continuations of the chain
    cut there (the token at the start resampled too); one left-padded `generate` call for all of them."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prefixes = [torch.cat([chain.prompt_ids, chain.token_ids[:s]]) for s in starts]
    rows = [p for p in prefixes for _ in range(settings.resamples)]
    longest = max(len(r) for r in rows)
    ids, mask = padded_batch(rows, pad)
    room = room_after(model, longest, settings.max_new_tokens)
    budgets = [max(1, min(settings.max_new_tokens - s, room)) for s in starts]
    torch.manual_seed(seed)
    out = model.generate(
        input_ids=ids.to(model.device),
        attention_mask=mask.to(model.device),
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=max(budgets),
        pad_token_id=pad,
    )
    eos = eos_ids(model)
    answers = []
    for i, start in enumerate(starts):
        found = []
        for r in range(i * settings.resamples, (i + 1) * settings.resamples):
            new = out[r, longest:].tolist()[: budgets[i]]
            cut = next((j for j, t in enumerate(new) if t in eos), len(new))
            found.append(parse_answer(tokenizer.decode(chain.token_ids[:start].tolist() + new[:cut])))
        answers.append(found)
    return answers


def step_decision_scores(model, report: Report, steps: list) -> dict[str, list[float]]:
    """Per decision score of `DECISION_SCORES` that applies to the model (meta and combined: SAGE only), each step's
    score: the maximum over its tokens of the token scores, on the scale the report's decision score read
    (`ExplainOptions.decision_temperature`)."""
    chain = Chain.from_report(report)
    scores = score_chain(model, chain, [], temperature=report.token_temperature, top_k=2)
    meta = meta_at_step_starts(scores, chain, step_separators(model))
    uncertainty = TokenUncertainty.of(scores, meta, calibrated=report.options.decision_temperature == "calibrated")
    names = [n for n in DECISION_SCORES if meta is not None or n not in META_SCORES]
    per_token = {n: decision_scores(n, uncertainty) for n in names}  # (T,) each
    return {n: [float(values[s.token_start : s.token_end].max()) for s in steps] for n, values in per_token.items()}


def decision_records(model, tokenizer, report: Report, item: ReasoningItem, settings: IntrospectionSettings) -> dict:
    """Per reasoning step of the own chain: its decision scores and the measured effect of resampling from its
    start; per decision point the report shows: how many of `resamples` continuations resampled from it (the token
    itself resampled) end with another answer. `report` is made with the default options (its decision points are
    what `explain` shows)."""
    last = answer_step(report)
    steps = reasoning_steps(report)
    if last is None or report.answer is None or not steps:
        return {"skipped": "no <|answer|> step, answer or reasoning step before it", "steps": [], "shown": []}
    shown = report.decision_points
    starts = [s.token_start for s in steps] + [last.token_start] + [d.position for d in shown]
    chain = Chain.from_report(report)
    answers = resampled_answers(model, tokenizer, chain, starts, settings, item_seed(settings, item))
    greedy = parse_answer(report.chain)
    p = [sum(a == greedy for a in found) / len(found) for found in answers[: len(steps) + 1]]
    scores = step_decision_scores(model, report, steps)
    return {
        "skipped": None,
        "default_score": report.options.decision_score,
        "p": p,
        "greedy": greedy,
        "steps": [
            {
                "step": k,
                **{name: values[k] for name, values in scores.items()},
                "position": float(k),
                "effect": abs(p[k + 1] - p[k]),
            }
            for k in range(len(steps))
        ],
        "shown": [
            {
                "position": point.position,
                "step": point.step,
                "score": point.score,
                "changes_answer": point.changes_answer,  # the engine's rollouts of its alternatives
                "other_answers": sum(a != greedy for a in found),
            }
            for point, found in zip(shown, answers[len(steps) + 1 :], strict=True)
        ],
    }
