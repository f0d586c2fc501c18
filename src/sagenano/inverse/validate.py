"""ValidateConsistency and RefineExplanation: every claim re-measured by intervention on the model.

- confidence and decision claims: the stated probability must match an independent, uncached
  teacher-forced pass over the chain (the report's numbers come from cached generation);
- alternative claims: the stated outcome must match a separate greedy generation forced down that
  branch, without the shared-prefix cache the engine used;
- dependency claims: replacing the claimed span's tokens (masking) must raise the step's negative
  log-likelihood more than replacing random spans of the same number of tokens typically does (their
  median: one random span that happens to hit the step's own cue must not decide the verdict).
"""

from __future__ import annotations

import random
import statistics

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .alternatives import decode_chain, extract_answer, outcome, rollouts
from .measure import Chain, ablate, replacement_id, score_chain, step_losses
from .report import Claim, Report, Validation

PROB_TOLERANCE = 0.02  # stated probabilities are rounded to 3 decimals; cached vs uncached passes differ ~1e-6


def validate(report: Report, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Validation:
    """Checks every claim of the report on the model, sets each claim's status and evidence, and scores."""
    model.eval()
    chain = Chain(torch.tensor(report.prompt_ids), torch.tensor([t.id for t in report.tokens]))
    scores = score_chain(model, chain, [])
    for claim in report.claims:
        check = {"confidence": _check_confidence, "decision": _check_decision}.get(claim.kind)
        if check is not None:
            check(claim, report, scores)
    _check_alternatives([c for c in report.claims if c.kind == "alternative"], report, model, tokenizer, chain)
    _check_dependencies([c for c in report.claims if c.kind == "dependency"], report, model, tokenizer, chain)
    return _score(report)


def _score(report: Report) -> Validation:
    verified = sum(c.status == "verified" for c in report.claims)
    refuted = sum(c.status == "refuted" for c in report.claims)
    total = len(report.claims)
    threshold = float(report.options.get("refine_below", 0.8))
    return Validation(score=verified / total if total else 1.0, verified=verified, refuted=refuted, total=total,
                      threshold=threshold)  # fmt: skip


def validate_and_refine(report: Report, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Validation:
    """Validates; below the threshold, drops the refuted claims and validates what is left again."""
    first = validate(report, model, tokenizer)
    if first.score >= first.threshold:
        report.validation = first
        return first
    removed = [c for c in report.claims if c.status == "refuted"]
    report.claims = [c for c in report.claims if c.status != "refuted"]
    second = validate(report, model, tokenizer)
    second.score_before_refinement = first.score
    second.removed_claims = removed
    report.validation = second
    return second


def _settle(claim: Claim, ok: bool, check: str, **evidence) -> None:
    claim.status = "verified" if ok else "refuted"
    claim.check = check
    claim.evidence = evidence


def _check_confidence(claim: Claim, report: Report, scores) -> None:
    probs = scores.logprobs.exp()
    if "least_confident_step" in claim.stated:
        reasoning = [s for s in report.steps if not s.is_answer]
        measured = [float(probs[s.token_start : s.token_end].mean()) for s in reasoning]
        if not measured:
            _settle(claim, False, "the chain has no reasoning steps to compare")
            return
        weakest = min(range(len(measured)), key=measured.__getitem__)
        ok = weakest == claim.stated["least_confident_step"] and abs(measured[weakest] - claim.stated["prob"]) <= 0.05
        _settle(claim, ok, "uncached pass: the least confident step and its mean token probability (±0.05)",
                measured_step=weakest, measured_prob=measured[weakest])  # fmt: skip
        return
    if claim.id == "confidence-answer":
        tokens = [t for s in report.steps if s.is_answer for t in range(s.token_start, s.token_end)]
        measured = float(scores.logprobs[tokens].sum().exp()) if tokens else float("nan")
    else:
        start, end = claim.stated["tokens"]
        measured = float(probs[start:end].mean())
    ok = abs(measured - claim.stated["prob"]) <= PROB_TOLERANCE
    _settle(claim, ok, f"uncached teacher-forced pass, tolerance {PROB_TOLERANCE}", measured_prob=measured)


def _check_decision(claim: Claim, report: Report, scores) -> None:
    position = claim.stated["position"]
    prob = float(scores.logprobs[position].exp())
    mode = report.options["decision_score"]
    meta = None
    if mode in ("meta", "combined"):
        point = next(d for d in report.decision_points if d.position == position)
        meta = point.meta_score
    entropy, margin = float(scores.entropies[position]), float(scores.top2_margin[position])
    score = {"entropy": entropy, "margin": 1 - margin}.get(mode)
    if score is None:
        score = meta if mode == "meta" else max(entropy, meta or 0.0)
    threshold = report.options["threshold"]
    ok = abs(prob - claim.stated["prob"]) <= PROB_TOLERANCE and score >= threshold - PROB_TOLERANCE
    _settle(claim, ok, f"uncached pass: probability within {PROB_TOLERANCE}, score at the threshold",
            measured_prob=prob, measured_score=score)  # fmt: skip


def _check_alternatives(claims: list[Claim], report: Report, model, tokenizer, chain: Chain) -> None:
    from .engine import _eos_ids

    eos = _eos_ids(model)
    budget = int(report.options["max_new_tokens"])
    for claim in claims:
        position, token = claim.stated["position"], claim.stated["token_id"]
        prefix = torch.cat([chain.prompt_ids, chain.token_ids[:position]])
        (ids,) = rollouts(model, prefix, [token], budget - position - 1, reuse_cache=False)
        text = decode_chain(tokenizer, chain.token_ids[:position].tolist() + ids, eos)
        answer = extract_answer(text)
        result = outcome(answer, report.answer)
        ok = result == claim.stated["outcome"] and answer == claim.stated["answer"]
        _settle(claim, ok, "a separate greedy generation forced down the branch, without the shared cache",
                measured_answer=answer, measured_outcome=result)  # fmt: skip


def _check_dependencies(claims: list[Claim], report: Report, model, tokenizer, chain: Chain) -> None:
    if not claims:
        return
    controls = int(report.options["random_controls"])
    rng = random.Random(int(report.options["seed"]))
    steps = {s.index: s for s in report.steps}
    inputs = chain.inputs
    rows, plans = [[]], []
    for claim in claims:
        step = steps[claim.step]
        claimed = claim.stated["positions"]
        pool = _eligible_positions(report, step.index)
        randoms = _random_windows(pool, len(claimed), set(claimed), controls, rng)
        plans.append((claim, len(rows), len(randoms)))
        rows.extend([claimed, *randoms])
    losses = step_losses(
        model, ablate(inputs, rows, replacement_id(tokenizer)), chain,
        [range(s.token_start, s.token_end) for s in report.steps],
    )  # fmt: skip
    for claim, first, count in plans:
        column = [s.index for s in report.steps].index(claim.step)
        base = float(losses[0, column])
        effect = float(losses[first, column]) - base
        random_effects = [float(losses[first + 1 + k, column]) - base for k in range(count)]
        if not random_effects:
            _settle(claim, False, "no random span of the same length to compare with", effect=effect)
            continue
        typical = statistics.median(random_effects)
        _settle(claim, effect > 0 and effect > typical,
                f"masking the span vs {len(random_effects)} random spans of {len(claim.stated['positions'])} tokens: "
                "change of the step's negative log-likelihood (nats)",
                effect=effect, random_effects=random_effects, random_median=typical,
                beats_share=sum(effect > r for r in random_effects) / len(random_effects))  # fmt: skip


def _eligible_positions(report: Report, step: int) -> list[int]:
    """Token positions a step may depend on: the question's spans and the spans of earlier steps."""
    first = next(s for s in report.steps if s.index == step)
    positions = {p for d in first.dependencies for p in d.span.positions}
    return sorted(positions)


def _random_windows(pool: list[int], length: int, avoid: set[int], count: int, rng: random.Random) -> list[list[int]]:
    """`count` random spans of `length` eligible positions that avoid `avoid`: runs of consecutive positions
    where there are enough of them, else random sets of positions (a short question has few runs)."""
    allowed = sorted(set(pool) - avoid)
    windows = [list(range(p, p + length)) for p in allowed if all(q in allowed for q in range(p, p + length))]
    rng.shuffle(windows)
    if len(windows) >= count:
        return windows[:count]
    size = min(length, len(allowed))
    return windows + [sorted(rng.sample(allowed, size)) for _ in range(count - len(windows))] if size else []
