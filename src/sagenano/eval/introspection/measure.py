"""Measuring one held-out item: span rankings, faithfulness, alternatives, calibration and decision points."""

from __future__ import annotations

import random
import time
import zlib

import torch

from ...data import parse_answer, prompt_text, training_text
from ...data.format import ANSWER
from ...data.schema import ReasoningItem
from ...decoding import Chain, eos_ids, is_sage, padded_batch, room_after
from ...inverse import Report, explain
from ...inverse.decisions import decision_scores, meta_at_step_starts, step_separators
from ...inverse.measure import ablate, replacement_id, score_chain, step_inputs, step_losses
from ..baselines import baseline_span_scores
from .calibration import chain_logits, step_confidence_at
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
from .settings import IntrospectionSettings

RANDOM_DRAWS = 3

# --- the gold chain and the span rankings (parts 1 and 5) -----------------------------------------------------


def gold_chain(item: ReasoningItem) -> str:
    return training_text(item)[len(prompt_text(item.question)) :]


def aligned(report: Report, item: ReasoningItem) -> bool:
    """Report step k is gold step k, the last report step is the answer, and the question is unchanged."""
    steps = report.steps
    return (
        report.question == item.question
        and report.prompt == prompt_text(item.question)
        and len(steps) == len(item.steps) + 1
        and all(s.text == g for s, g in zip(steps, item.steps, strict=False))
        and steps[-1].is_answer
        and steps[-1].text == item.answer
    )


def item_seed(settings: IntrospectionSettings, item: ReasoningItem) -> int:
    return (settings.seed * 1_000_003 + zlib.crc32(item.id.encode())) % 2**31


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


# --- the model's own chain (parts 2-4) -------------------------------------------------------------------------


def alternative_counts(report: Report) -> dict:
    """Alternative claims and how many were verified (claims refinement removed count, as refuted)."""
    removed = report.validation.removed_claims if report.validation else []
    claims = [c for c in [*report.claims, *removed] if c.kind == "alternative"]
    return {
        "decision_points": len(report.decision_points),
        "alternatives": len(claims),
        "verified": sum(c.status == "verified" for c in claims),
    }


def answer_step(report: Report):
    """The answer step when the chain writes `<|answer|>`, else None."""
    if ANSWER not in report.chain:
        return None
    return next((s for s in report.steps if s.is_answer), None)


def reasoning_steps(report: Report) -> list:
    """The steps before the answer step (all steps when the chain writes no `<|answer|>`)."""
    last = answer_step(report)
    return [s for s in report.steps if last is None or s.index < last.index]


def calibration_record(model, report: Report, item: ReasoningItem, settings: IntrospectionSettings) -> dict:
    """The own chain's answer and step confidences, raw and calibrated, with their correctness."""
    answered = answer_step(report) is not None
    record = {
        "answered": answered,
        "correct": answered and parse_answer(report.chain) == item.answer,
        "confidence": report.answer_confidence if answered and report.answer_confidence is not None else 0.0,
        "calibrated": None,
        "steps": [],
    }
    if settings.answer_calibration is not None:  # the report's calibrated confidence; 0 without an answer
        record["calibrated"] = (report.calibrated_answer_confidence or 0.0) if answered else 0.0
    steps = reasoning_steps(report)
    logits = chain_logits(model, Chain.from_report(report)) if settings.step_temperature and steps else None
    for step in steps:
        calibrated = None
        if logits is not None:
            ids = torch.tensor([t.id for t in report.tokens[step.token_start : step.token_end]])
            rows = logits[step.token_start : step.token_end]
            calibrated = float(step_confidence_at(rows, ids, torch.tensor([settings.step_temperature]))[0])
        correct = step.index < len(item.steps) and step.text == item.steps[step.index]
        record["steps"].append({"confidence": step.confidence, "calibrated": calibrated, "correct": correct})
    return record


@torch.no_grad()
def resampled_answers(
    model, tokenizer, chain: Chain, starts: list[int], settings: IntrospectionSettings, seed: int
) -> list:
    """For each start (a generated-token index), the answers of `resamples` sampled continuations of the chain
    cut there; one left-padded `generate` call for all of them."""
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


def step_meta_scores(model, report: Report, steps: list) -> list[float] | None:
    """Per step: max over its tokens of the meta head's decision probability at step starts (SAGE only)."""
    if not is_sage(model):
        return None
    chain = Chain.from_report(report)
    meta = meta_at_step_starts(score_chain(model, chain, []), chain, step_separators(model))
    if meta is None:
        return None
    return [float(meta[s.token_start : s.token_end].max()) for s in steps]


def combined_step_score(entropy: float, meta: float | None) -> float:
    """A step's "combined" decision score (`sagenano.inverse.decisions`) from its entropy and meta scores; the
    entropy alone without a meta head. In float64, so the result is exactly one of the two."""
    if meta is None:
        return entropy
    entropies, metas = torch.tensor([entropy], dtype=torch.float64), torch.tensor([meta], dtype=torch.float64)
    return float(decision_scores("combined", entropies, torch.zeros_like(entropies), metas)[0])


def decision_records(model, tokenizer, report: Report, item: ReasoningItem, settings: IntrospectionSettings) -> dict:
    """Per reasoning step of the own chain: its decision scores and the measured effect of resampling."""
    last = answer_step(report)
    steps = reasoning_steps(report)
    if last is None or report.answer is None or not steps:
        return {"skipped": "no <|answer|> step, answer or reasoning step before it", "steps": []}
    starts = [s.token_start for s in steps] + [last.token_start]
    chain = Chain.from_report(report)
    answers = resampled_answers(model, tokenizer, chain, starts, settings, item_seed(settings, item))
    greedy = parse_answer(report.chain)
    p = [sum(a == greedy for a in found) / len(found) for found in answers]
    meta = step_meta_scores(model, report, steps)
    records = []
    for k, step in enumerate(steps):
        entropy = max(t.entropy for t in report.tokens[step.token_start : step.token_end])
        m = None if meta is None else meta[k]
        records.append(
            {
                "step": k,
                "entropy": entropy,
                "meta": m,
                "combined": combined_step_score(entropy, m),
                "position": float(k),
                "effect": abs(p[k + 1] - p[k]),
            }
        )
    return {"skipped": None, "p": p, "greedy": greedy, "steps": records}


# --- one item ---------------------------------------------------------------------------------------------------


def measure_item(
    model,
    tokenizer,
    item: ReasoningItem,
    settings: IntrospectionSettings,
    own: bool = True,
    decision: bool = False,
    faithfulness: bool = False,
) -> dict:
    """Every measurement of one item (`docs/introspection.md`); `own`, `decision` and `faithfulness` say which
    of the capped parts to run. Returns JSON-ready records, the seconds each part took and, per ranking method,
    the seconds and steps it explained (`method_seconds`; aligned items only)."""
    seconds: dict[str, float] = {}
    result: dict = {
        "id": item.id,
        "task": item.task,
        "has_distractors": bool(item.distractors),
        "seconds": seconds,
        "method_seconds": {},
    }
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
    own_options = dict(
        model_name=settings.model_name,
        rollouts=True,
        validate=True,
        own_explanation=False,
        max_new_tokens=settings.max_new_tokens,
        calibration=settings.answer_calibration,
        seed=settings.seed,
    )
    report = None
    if own:
        start = time.perf_counter()
        report = explain(model, tokenizer, item.question, **own_options)
        result["alternatives"] = alternative_counts(report)
        result["calibration"] = calibration_record(model, report, item, settings)
        seconds["own"] = time.perf_counter() - start
    if decision:
        start = time.perf_counter()
        low = explain(model, tokenizer, item.question, **{**own_options, "threshold": settings.low_threshold})
        result["alternatives_low"] = alternative_counts(low)
        seconds["alternatives_low"] = time.perf_counter() - start
        start = time.perf_counter()
        result["decision"] = decision_records(model, tokenizer, report or low, item, settings)
        seconds["decision"] = time.perf_counter() - start
    return result
