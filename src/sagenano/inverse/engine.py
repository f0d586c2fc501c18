"""Algorithm 1 of the paper: explain a reasoning chain, then check the explanation against the model.

trace = forward pass with tracking            (traced generation, KV cache)
D = ExtractDecisionPoints(trace, threshold)   (top-1/top-2 margin, alternatives' mass, entropy or SAGE's meta head)
for d in D: GenerateAlternatives(d, top_k)    (each plausible alternative rolled out to its own answer; a candidate
                                               is shown when one of them changes the answer, else kept as a hesitation)
confidences, dependencies (eq. 7)             (per token / step / answer; spans of the input)
E = claims built only from those measurements
ValidateConsistency(E) by intervention; RefineExplanation: refuted claims out, refuted dependencies repaired
(beside them: is the question familiar, does the answer rest on the chain)
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data.format import EXPLANATION
from ..decoding import Chain, decode_each, eos_ids, is_sage, token_char_ends
from ..generation import ReasoningTrace, trace_generate
from ..lookup_decoding import lookup_applies
from .alternatives import branch_rollouts, chain_end, decode_chain, rollout_batch
from .answers import changes_answer, extract_answer, locate_answer, outcome
from .claims import make_claims
from .decisions import TokenUncertainty, decision_scores, margin_score, meta_at_step_starts, step_separators
from .faithfulness import measure_reliance
from .familiarity import measure_familiarity
from .measure import Scores, score_chain, step_gradient_norms
from .options import ExplainOptions, check_question
from .own_explanation import read_own_explanation
from .report import Alternative, DecisionPoint, DependencyScore, Report, SpanRef, Step, TokenRecord
from .significance import attention_rows, span_score
from .significance import significance as eq7_significance
from .spans import question_units, step_units
from .validation import validate_and_refine

CANDIDATES_PER_SHOWN = 2  # candidates rolled out per decision point that may be shown (the rest are hesitations)


Progress = Callable[[str, dict[str, Any]], None]


class _Timer:
    """Times each phase, and tells `progress` (when given) as each begins: ("phase", {"name": ...})."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.progress = progress

    def tell(self, event: str, **data: Any) -> None:
        if self.progress is not None:
            self.progress(event, data)

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        self.tell("phase", name=phase)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


def explain(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    model_name: str | None = None,
    progress: Progress | None = None,
    **options,
) -> Report:
    """Answers `question` with a reasoning chain and explains it: decision points, alternatives and their
    outcomes, confidences, dependencies, and claims checked by intervention. See `ExplainOptions`.

    `progress(event, data)`, when given, is called as each phase begins (event "phase", data {"name"}) and once
    the chain is generated (event "chain", data {"text"}); an exception it raises stops the work (a deadline)."""
    opts = ExplainOptions.of(**options).resolved(model)
    question = check_question(question)
    model.eval()
    timer = _Timer(progress)
    forced = None
    if opts.chain is not None:
        forced = tokenizer(opts.chain, add_special_tokens=False).input_ids
        if not forced:
            raise ValueError("the given chain is empty")
    with timer("generation"):
        trace = trace_generate(
            model,
            tokenizer,
            question,
            max_new_tokens=opts.max_new_tokens,
            top_k=1,  # the alternatives come from the scoring pass (raw and calibrated)
            attention="full" if opts.attention_aggregate == "rollout" else "summary",
            step_strategy=opts.step_strategy,
            chat=opts.chat,
            forced=forced,
            lookup=forced is None and lookup_applies(model),  # generate's tokens in fewer passes
        )
    timer.tell("chain", text=trace.text)
    chain = Chain(trace.prompt_ids, trace.token_ids)
    located = locate_answer(trace)
    answer, answer_tokens, answer_step = located.answer, located.tokens, located.step
    with timer("scoring"):
        # Rollouts, and the model's own explanation when it will be asked for, start from the chain's keys and values.
        writes_explanation = opts.own_explanation and is_sage(model) and answer is not None
        asked = writes_explanation and EXPLANATION not in trace.text
        token_temperature = opts.calibration.token_temperature if opts.calibration else None
        scores = score_chain(
            model,
            chain,
            answer_tokens,
            keep_cache=asked or opts.rollouts,
            temperature=token_temperature,
            top_k=opts.alternatives + 1,
            step_temperature=opts.calibration.step_temperature if opts.calibration else None,
        )
    steps = _steps(trace, scores, chain, answer_step, opts)
    with timer("decision_points"):
        candidates, top_score = _decision_points(trace, scores, chain, steps, opts, model, tokenizer)
    with timer("alternatives"):
        if opts.rollouts:
            _roll_out(model, tokenizer, chain, candidates, answer, opts, scores.cache)
        decisions, hesitations = _shown_and_hesitations(candidates, opts.max_decision_points)
    with timer("dependencies"):
        _dependencies(model, tokenizer, question, trace, chain, steps, decisions, opts)
    answer_confidence = math.exp(float(trace.logprobs[answer_tokens].sum())) if answer_tokens else None
    calibrated_answer = _calibrated_answer(opts, scores, trace, answer_tokens)
    if calibrated_answer is not None:
        for step in steps:
            if step.is_answer:  # the step curve was fitted on reasoning steps; the answer has its own
                step.calibrated_confidence = calibrated_answer
    report = Report(
        model=model_name or getattr(model, "name_or_path", "") or type(model).__name__,
        question=question,
        prompt=trace.prompt,
        prompt_ids=trace.prompt_ids.tolist(),
        chain=trace.text,
        finish_reason=trace.finish_reason,
        answer=answer,
        answer_tokens=answer_tokens,
        answer_confidence=answer_confidence,
        calibrated_answer_confidence=calibrated_answer,
        temperature=opts.calibration.temperature if opts.calibration else None,
        calibration=opts.calibration.method if opts.calibration else None,
        tokens=_tokens(trace, scores),
        steps=steps,
        decision_points=decisions,
        hesitations=hesitations,
        top_decision_score=top_score,
        token_temperature=token_temperature,
        claims=[],
        options=opts,
    )
    with timer("familiarity"):
        report.familiarity = measure_familiarity(model, tokenizer, report, opts.calibration)
    if opts.reliance:
        with timer("reliance"):
            report.reliance = measure_reliance(model, tokenizer, report)
    with timer("claims"):
        report.claims = make_claims(report, opts)
    if writes_explanation:
        with timer("own_explanation"):
            read_own_explanation(model, tokenizer, chain, trace, report, scores.cache)
    if opts.validate:
        with timer("validation"):
            # The scoring pass above is teacher-forced and reads no earlier cache, as validation's own would be.
            validate_and_refine(report, model, tokenizer, scores)
    report.timings = timer.seconds
    return report


# --- the answer and the steps -------------------------------------------------------------------------


def _calibrated_answer(
    opts: ExplainOptions, scores: Scores, trace: ReasoningTrace, answer_tokens: list[int]
) -> float | None:
    """The answer's calibrated confidence (None without a calibration or an answer)."""
    if opts.calibration is None or not answer_tokens:
        return None
    return opts.calibration.confidence(scores.answer_logits, trace.token_ids[answer_tokens])


def _steps(
    trace: ReasoningTrace, scores: Scores, chain: Chain, answer_step: int | None, opts: ExplainOptions
) -> list[Step]:
    probs = trace.logprobs.exp()
    at_step_temperature = None if scores.step_logprobs is None else scores.step_logprobs.exp()
    entropies = trace.normalized_entropies
    steps = []
    for span in trace.steps:
        tokens = range(span.token_start, span.token_end)
        step_confidence = None
        if at_step_temperature is not None and len(tokens):
            mean = float(at_step_temperature[span.token_start : span.token_end].mean())
            step_confidence = opts.calibration.recalibrate_step(mean)
        meta = None
        if scores.meta_confidence is not None:
            meta = float(scores.meta_confidence[chain.predicting(tokens)].mean())
        steps.append(
            Step(
                index=span.index,
                text=span.text,
                token_start=span.token_start,
                token_end=span.token_end,
                confidence=float(probs[span.token_start : span.token_end].mean()),
                calibrated_confidence=step_confidence,
                min_prob=float(probs[span.token_start : span.token_end].min()),
                entropy=float(entropies[span.token_start : span.token_end].mean()),
                meta_confidence=meta,
                is_answer=span.index == answer_step,
            )
        )
    return steps


def _tokens(trace: ReasoningTrace, scores: Scores) -> list[TokenRecord]:
    owner = {t: s.index for s in trace.steps for t in range(s.token_start, s.token_end)}
    entropies = trace.normalized_entropies
    calibrated = scores.calibrated_logprobs.exp().tolist() if scores.calibrated else [None] * trace.num_tokens
    return [
        TokenRecord(
            index=t,
            id=int(trace.token_ids[t]),
            token=trace.tokens[t],
            prob=math.exp(float(trace.logprobs[t])),
            calibrated_prob=calibrated[t],
            entropy=float(entropies[t]),
            step=owner.get(t),
        )
        for t in range(trace.num_tokens)
    ]


# --- decision points and alternatives ------------------------------------------------------------------


def _decision_points(
    trace: ReasoningTrace, scores: Scores, chain: Chain, steps: list[Step], opts: ExplainOptions, model, tokenizer
) -> tuple[list[DecisionPoint], float | None]:
    """The candidate decision points (score at the threshold, a plausible alternative, at most
    `CANDIDATES_PER_SHOWN` × `max_decision_points` of the highest scores), and the highest decision score of any token
    in a step (for a report that has none: how close the closest call came)."""
    meta = meta_at_step_starts(scores, chain, step_separators(model))
    uncertainty = TokenUncertainty.of(scores, meta, calibrated=opts.decision_temperature == "calibrated")
    score = decision_scores(opts.decision_score, uncertainty)  # resolved: not "auto"
    owner = {t: s.index for s in steps for t in range(s.token_start, s.token_end)}
    in_steps = [t for t in range(trace.num_tokens) if t in owner]
    top_score = max((float(score[t]) for t in in_steps), default=None)
    ranked = sorted((t for t in in_steps if float(score[t]) >= opts.threshold), key=lambda t: -float(score[t]))
    points = []
    for t in ranked:
        alternatives = _plausible_alternatives(scores, t, int(trace.token_ids[t]), opts, tokenizer)
        if not alternatives:
            continue
        points.append(
            DecisionPoint(
                position=t,
                step=owner[t],
                token=trace.tokens[t],
                prob=math.exp(float(trace.logprobs[t])),
                calibrated_prob=float(scores.calibrated_logprobs[t].exp()) if scores.calibrated else None,
                score=float(score[t]),
                entropy=float(trace.normalized_entropies[t]),
                margin=float(1 - margin_score(uncertainty.at(slice(t, t + 1)))[0]),
                meta_score=None if meta is None else float(meta[t]),
                alternatives=alternatives,
            )
        )
        if len(points) >= CANDIDATES_PER_SHOWN * opts.max_decision_points:
            break
    return sorted(points, key=lambda d: d.position), top_score


def _plausible_alternatives(scores: Scores, t: int, chosen: int, opts: ExplainOptions, tokenizer) -> list[Alternative]:
    """The most likely other tokens at generated position t whose probability (on the decision score's scale,
    `decision_temperature`) reaches `min_alternative_prob` (never a 1e-7 token), at most `alternatives` of them."""
    found = []
    by_calibrated = opts.decision_temperature == "calibrated" and scores.calibrated
    for tid, raw, calibrated in zip(
        scores.top_ids[t].tolist(),
        scores.top_raw_logprobs[t].exp().tolist(),
        scores.top_logprobs[t].exp().tolist(),
        strict=True,
    ):
        if tid != chosen and (calibrated if by_calibrated else raw) >= opts.min_alternative_prob:
            found.append(
                Alternative(
                    token=decode_each(tokenizer, torch.tensor([tid]))[0],
                    token_id=tid,
                    prob=raw,
                    calibrated_prob=calibrated if scores.calibrated else None,
                    chain="",
                    answer=None,
                    outcome="no_answer",
                )
            )
    return found[: opts.alternatives]


def _shown_and_hesitations(
    candidates: list[DecisionPoint], most: int
) -> tuple[list[DecisionPoint], list[DecisionPoint]]:
    """The decision points shown (an alternative changes the answer, or nothing was rolled out), the `most` highest
    scores, in chain order; and the hesitations that did not matter (every rolled-out alternative kept the answer).
    Candidates that changed the answer beyond `most` are in neither."""
    by_score = sorted(candidates, key=lambda d: -d.score)
    shown = [d for d in by_score if d.changes_answer is not False][:most]
    return sorted(shown, key=lambda d: d.position), [d for d in candidates if d.changes_answer is False]


def _roll_out(model, tokenizer, chain: Chain, decisions, answer, opts, states=None) -> None:
    """Rolls every alternative of every decision point out, as many branches per batch as `rollout_memory_mb`
    allows; fills in chains, answers and outcomes. `states`: the chain's keys and values, when at hand."""
    eos = eos_ids(model)
    sequence = torch.cat([chain.prompt_ids, chain.token_ids])
    branches = [(chain.prompt_len + d.position, a) for d in decisions for a in d.alternatives]
    end = chain_end(model, chain, opts.max_new_tokens)
    size = rollout_batch(model, end, opts.rollout_memory_mb)
    continuations = [
        continuation
        for start in range(0, len(branches), size)
        for continuation in branch_rollouts(
            model, sequence, [(k, a.token_id) for k, a in branches[start : start + size]], end, states=states
        )
    ]
    for (k, alternative), continuation in zip(branches, continuations, strict=True):
        alternative.ids = continuation
        text = decode_chain(tokenizer, sequence[chain.prompt_len : k].tolist() + continuation, eos)
        alternative.chain = text
        alternative.answer = extract_answer(text)
        alternative.outcome = outcome(alternative.answer, answer)
    for point in decisions:
        point.changes_answer = any(changes_answer(a.answer, answer) for a in point.alternatives)


# --- dependencies (eq. 7) -----------------------------------------------------------------------------


def prompt_char_ends(tokenizer: PreTrainedTokenizerBase, prompt_ids: torch.Tensor) -> tuple[str, list[int]]:
    ids = prompt_ids.tolist()
    return tokenizer.decode(ids), token_char_ends(tokenizer, ids)


def candidate_units(tokenizer, question: str, trace: ReasoningTrace) -> tuple[list[SpanRef], dict[int, list[SpanRef]]]:
    """The question's units, and each step's own units (which later steps may depend on)."""
    text, ends = prompt_char_ends(tokenizer, trace.prompt_ids)
    in_question = question_units(question, text, ends)
    offset = len(trace.prompt_ids)
    in_steps = {s.index: step_units(s.index, s.text, s.char_start, trace.token_char_ends, offset) for s in trace.steps}
    limit = offset + trace.num_tokens - 1  # the last generated token is never an input
    for units in in_steps.values():
        units[:] = [u for u in units if max(u.positions) < limit]
    return in_question, in_steps


def _dependencies(model, tokenizer, question, trace, chain, steps: list[Step], decisions, opts) -> None:
    """Ranks, for each step that needs it, the spans it rests on by eq. 7 significance."""
    wanted = [s for s in steps if s.token_end > s.token_start]
    if opts.dependency_steps == "decisions":
        with_points = {d.step for d in decisions}
        wanted = [s for s in wanted if s.index in with_points or s.is_answer]
    if not wanted:
        return
    in_question, in_steps = candidate_units(tokenizer, question, trace)
    attention = attention_rows(trace, model, opts.attention_aggregate)  # (T, N)
    gradients = step_gradient_norms(
        model, chain, [range(s.token_start, s.token_end) for s in wanted], opts.gradient_layer
    )  # (S, N)
    for step, gradient in zip(wanted, gradients, strict=True):
        weight = attention[step.token_start : step.token_end].mean(0)
        entropy = step.entropy if opts.entropy_term == "step" else 1.0
        significance = eq7_significance(weight, gradient, entropy)
        units = in_question + [u for k in range(step.index) for u in in_steps.get(k, [])]
        step.dependencies = rank_units(units, significance, weight, gradient, opts.span_aggregate)


def rank_units(units: list[SpanRef], significance, attention, gradient, how: str) -> list[DependencyScore]:
    """Units scored by significance (aggregated over their tokens), highest first, with their share."""
    scored = [
        (
            unit,
            span_score(significance, unit.positions, how),
            span_score(attention, unit.positions, how),
            span_score(gradient, unit.positions, how),
        )
        for unit in units
    ]
    total = sum(s for _, s, _, _ in scored) or 1.0
    scored.sort(key=lambda row: -row[1])
    return [
        DependencyScore(span=unit, significance=sig, share=sig / total, attention=att, gradient=grad)
        for unit, sig, att, grad in scored
    ]
