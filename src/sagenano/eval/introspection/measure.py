"""Measuring one held-out item: span rankings and faithfulness on its gold chain, then the parts of `own`."""

from __future__ import annotations

import random
import time

from ...data.schema import ReasoningItem
from ...decoding import Chain
from ...inverse import Report, explain
from ...inverse.measure import ablate, replacement_id, step_inputs, step_losses
from ..baselines import baseline_span_scores
from .items import aligned, gold_chain, item_seed
from .metrics import (
    ENGINE_RANKINGS,
    TOP_K,
    comprehensiveness,
    erasure_rows,
    mean,
    random_positions,
    rank,
    rank_by_scores,
    ranking_metrics,
    sufficiency,
)
from .own import alternative_counts, calibration_record, claim_records, decision_records, reliance_record
from .settings import IntrospectionSettings

RANDOM_DRAWS = 3

# --- the gold chain and the span rankings (parts 1 and 5) -----------------------------------------------------


def ranked_steps(report: Report, item: ReasoningItem) -> list[int]:
    """The gold steps parts 1 and 5 measure: those with gold dependencies and candidate spans."""
    return [k for k, gold in enumerate(item.dependencies) if gold and report.steps[k].dependencies]


def engine_rankings(report: Report, item: ReasoningItem) -> dict[int, dict[str, list]]:
    """Per measured step: each engine ranking of its candidate spans (best first)."""
    return {k: {m: rank(report.steps[k].dependencies, m) for m in ENGINE_RANKINGS} for k in ranked_steps(report, item)}


def add_baseline_rankings(
    model,
    tokenizer,
    report: Report,
    item: ReasoningItem,
    settings: IntrospectionSettings,
    rankings: dict[int, dict[str, list]],
) -> dict[str, float]:
    """Adds each baseline's ranking to every measured step of `rankings`; returns each baseline's wall seconds."""
    seconds = dict.fromkeys(settings.baselines, 0.0)
    for k, methods in rankings.items():
        for method in settings.baselines:
            start = time.perf_counter()
            scores = baseline_span_scores(
                method,
                model,
                tokenizer,
                report,
                k,
                n_samples=settings.baseline_samples,
                seed=item_seed(settings, item) + k,
            )
            seconds[method] += time.perf_counter() - start
            methods[method] = rank_by_scores(report.steps[k].dependencies, scores)
    return seconds


def dependency_records(report: Report, item: ReasoningItem, rankings: dict[int, dict[str, list]]) -> list[dict]:
    """Per measured step: the ranking metrics of every method."""
    return [
        {
            "step": k,
            "gold": len(item.dependencies[k]),
            "candidates": len(report.steps[k].dependencies),
            **{
                m: ranking_metrics([d.span for d in ranked], item.dependencies[k], item.distractors)
                for m, ranked in methods.items()
            },
        }
        for k, methods in rankings.items()
    ]


def faithfulness_records(
    model,
    tokenizer,
    report: Report,
    item: ReasoningItem,
    settings: IntrospectionSettings,
    rankings: dict[int, dict[str, list]],
) -> list[dict]:
    """Per measured step: comprehensiveness and sufficiency of each method's top 3, and of random spans."""
    chain = Chain.from_report(report)
    replacement = replacement_id(tokenizer)
    records = []
    for k, methods in rankings.items():
        step = report.steps[k]
        tokens = range(step.token_start, step.token_end)
        spans = [d.span.positions for d in step.dependencies]
        pool = {p for positions in spans for p in positions}
        rng = random.Random(item_seed(settings, item) + k)
        rows: list[list[int]] = [[]]
        plans = {}
        for method, ranked in methods.items():
            top = {p for d in ranked[:TOP_K] for p in d.span.positions}
            plans[method] = (len(rows), len(top))
            rows.extend(erasure_rows(top, pool))
            for _ in range(RANDOM_DRAWS):
                rows.extend(erasure_rows(set(random_positions(spans, len(top), rng)), pool))
        nll = step_losses(model, ablate(step_inputs(chain, tokens), rows, replacement), chain, tokens).tolist()
        record = {"step": k, "nll": nll[0]}
        for method, (at, count) in plans.items():
            draws = [nll[at + 2 + 2 * d : at + 4 + 2 * d] for d in range(RANDOM_DRAWS)]
            record[method] = {
                "tokens": count,
                "comprehensiveness": comprehensiveness(nll[0], nll[at]),
                "sufficiency": sufficiency(nll[0], nll[at + 1]),
                "random_comprehensiveness": mean([comprehensiveness(nll[0], d[0]) for d in draws]),
                "random_sufficiency": mean([sufficiency(nll[0], d[1]) for d in draws]),
            }
        records.append(record)
    return records


# --- one item ---------------------------------------------------------------------------------------------------


def measure_item(
    model,
    tokenizer,
    item: ReasoningItem,
    settings: IntrospectionSettings,
    own: bool = True,
    decision: bool = False,
    faithfulness: bool = False,
    dependency: bool = True,
) -> dict:
    """Every measurement of one item (`docs/introspection.md`); the flags say which parts to run (faithfulness reads
    the gold chain of `dependency`; decision reads the own chain, so it runs `own` too). Returns JSON-ready records,
    the seconds each part took and, per ranking method, the seconds and steps it explained (`method_seconds`; aligned
    gold chains only)."""
    seconds: dict[str, float] = {}
    result: dict = {
        "id": item.id,
        "task": item.task,
        "has_distractors": bool(item.distractors),
        "seconds": seconds,
        "method_seconds": {},
    }
    if dependency or faithfulness:
        measure_gold_chain(model, tokenizer, item, settings, faithfulness, result)
    own_options = dict(
        model_name=settings.model_name,
        rollouts=True,
        validate=True,
        own_explanation=False,
        max_new_tokens=settings.max_new_tokens,
        calibration=settings.calibration,
        seed=settings.seed,
    )
    if not (own or decision):
        return result
    start = time.perf_counter()
    report = explain(model, tokenizer, item.question, **own_options)  # the default options: what a user sees
    result["alternatives"] = alternative_counts(report)
    result["calibration"] = calibration_record(report, item)
    result["reliance"] = reliance_record(report)
    seconds["own"] = time.perf_counter() - start
    start = time.perf_counter()
    result["claims"] = claim_records(model, tokenizer, report, item, settings)
    seconds["claims"] = time.perf_counter() - start
    if decision:
        start = time.perf_counter()
        low = explain(model, tokenizer, item.question, **{**own_options, "threshold": settings.low_threshold})
        result["alternatives_low"] = alternative_counts(low)
        seconds["alternatives_low"] = time.perf_counter() - start
        start = time.perf_counter()
        result["decision"] = decision_records(model, tokenizer, report, item, settings)
        seconds["decision"] = time.perf_counter() - start
    return result


def measure_gold_chain(
    model, tokenizer, item: ReasoningItem, settings: IntrospectionSettings, faithfulness: bool, result: dict
) -> None:
    """Parts 1, 5 and 6 on the item's gold chain, into `result`: the rankings of every method, their timings and,
    when `faithfulness`, their comprehensiveness and sufficiency."""
    seconds = result["seconds"]
    start = time.perf_counter()
    gold = explain(
        model,
        tokenizer,
        item.question,
        model_name=settings.model_name,
        chain=gold_chain(item),
        rollouts=False,
        validate=False,
        own_explanation=False,
        reliance=False,
        seed=settings.seed,
    )
    explained = time.perf_counter() - start
    result["aligned"] = aligned(gold, item)
    rankings = engine_rankings(gold, item) if result["aligned"] else {}
    seconds["dependency"] = time.perf_counter() - start
    start = time.perf_counter()
    baseline_seconds = add_baseline_rankings(model, tokenizer, gold, item, settings, rankings)
    seconds["baselines"] = time.perf_counter() - start
    result["dependency"] = dependency_records(gold, item, rankings)
    if result["aligned"]:
        result["method_seconds"] = {
            "eq7": {"seconds": explained, "steps": len(gold.steps)},
            **{m: {"seconds": t, "steps": len(rankings)} for m, t in baseline_seconds.items()},
        }
    if faithfulness:
        start = time.perf_counter()
        result["faithfulness"] = faithfulness_records(model, tokenizer, gold, item, settings, rankings)
        seconds["faithfulness"] = time.perf_counter() - start
