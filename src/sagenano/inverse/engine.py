"""Algorithm 1 of the paper: explain a reasoning chain, then check the explanation against the model.

trace = forward pass with tracking            (traced generation, KV cache)
D = ExtractDecisionPoints(trace, threshold)   (normalised entropy, top-2 margin or SAGE's meta head)
for d in D: GenerateAlternatives(d, top_k)    (each alternative rolled out to its own answer)
confidences, dependencies (eq. 7)             (per token / step / answer; spans of the input)
E = claims built only from those measurements
ValidateConsistency(E) by intervention; RefineExplanation if the score is below the threshold
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data.format import EXPLANATION, explanation_pool
from ..generation import (
    ReasoningTrace,
    context_length,
    eos_ids,
    head_groups,
    lookup_applies,
    token_char_ends,
    trace_generate,
)
from ..lookup_decoding import lookup_greedy
from .alternatives import branch_rollouts, decode_chain, extract_answer, outcome
from .calibration import AnswerCalibration
from .claims import make_claims, own_explanation_claims
from .measure import Chain, Scores, is_sage, kv_cache_bytes_per_token, score_chain, step_gradient_norms
from .report import (
    Alternative,
    DecisionPoint,
    DependencyScore,
    OwnExplanation,
    Report,
    SpanRef,
    Step,
    TokenRecord,
)  # fmt: skip
from .spans import aggregate, question_units, step_units

DECISION_SCORES = ("auto", "entropy", "margin", "meta", "combined")
ATTENTION_AGGREGATES = ("auto", "mean", "last", "rollout")  # and "group:<name>"
MAX_QUESTION_CHARS = 4000


@dataclass
class ExplainOptions:
    """How `explain` measures; every option is recorded in the report.

    Args:
        max_new_tokens: bound on the generated chain.
        threshold: a token is a decision point when its decision score reaches this.
        decision_score: "entropy" (normalised entropy), "margin" (1 − top-1/top-2 margin), "meta" (SAGE's
            meta-cognitive head, at step starts), "combined" (the larger of entropy and meta), or "auto"
            (combined on SAGE models, entropy otherwise).
        max_decision_points: keep at most this many, the highest-scoring.
        alternatives: top-k alternative tokens per decision point.
        rollouts: roll every alternative out to its own answer.
        rollout_memory_mb: bound on the rollouts' KV caches: each branch is counted as holding a cache as long as
            the chain (an upper bound where shared-prefix attention keeps the chain's keys and values once and a row
            only its own positions), and as many branches are generated together as fit (at least one). Batching
            all of them is fastest on small models (8-9 at a time instead of 30 took 1.6-1.7× the time for SAGE
            small, 128 tokens), while for nano 30 left-padded branches would hold ~3.3 GB (bench/explain_memory.py).
        attention_aggregate: the w_ij of eq. 7: "mean" (all layers and heads), "last" (last layer),
            "group:<name>" (one head group, all layers), "rollout" (attention rollout over layers), or "auto"
            (SAGE's reasoning heads, group:reasoning, where the model has them; else mean).
        gradient_layer: the hidden state h_j of eq. 7 (0 = the embeddings: every path from the input counts; a
            deeper layer sees only what later layers still read from position j; the last layer's output
            reaches no other position, so it carries no dependency). None: the middle layer's output
            (num_hidden_layers // 2) on SAGE models, the embeddings (0) on others. Chosen on development items
            (bench/eq7_options.py): on the first shipped pico, the first layer's output with the reasoning heads
            raised eq. 7's top-1 from 61 % to 86 %; on the pico shipped on 2026-11-27 the middle layer (2 of 4)
            gave 88.6 % against 79.6 % for the first (logic 77 % against 36 %), and on the one shipped on 2026-11-28
            92.6 % against 89.5 % (layer 3: 89.0 %; 30 items per task). On a 2-layer Llama trained to copy a
            number, the first layer's output ranked the question's last clause above the number on every test
            question (tests/test_inverse.py), so other models keep the embeddings.
        entropy_term: "step" (the step's mean normalised token entropy, eq. 7's entropy factor) or "none".
        span_aggregate: how token scores combine into a span's: mean (default: on development items, with the first
            shipped model, it ranked a true dependency first in 71 % of steps against 48 % for max), max or sum.
        dependency_steps: "all" steps, or only the "decisions" (steps with a decision point, and the answer).
        critical_dependencies: dependency claims per step (its top-ranked spans).
        validate: check every claim by intervention (ValidateConsistency) and refine below `refine_below`.
        random_controls: random spans ablated per dependency claim as its control.
        refine_below: the validation score under which unverified claims are removed and validation reruns.
        calibration: the model's answer-confidence calibration (`load_model(...).calibration`: a temperature and an
            isotonic curve, `inverse.calibration.AnswerCalibration`); None: not calibrated.
        own_explanation: on SAGE models, let the model write its own explanation and check it.
        chain: explain this chain (the text that follows the prompt, e.g. a reference solution) instead of
            generating one; the model's own probabilities, alternatives and attention are measured along it.
        step_strategy / chat: how the chain is cut into steps; whether to use the chat template.
        seed: seed of the random controls.
    """

    max_new_tokens: int = 160
    threshold: float = 0.3
    decision_score: str = "auto"
    max_decision_points: int = 6
    alternatives: int = 5
    rollouts: bool = True
    rollout_memory_mb: float = 512.0
    attention_aggregate: str = "auto"
    gradient_layer: int | None = None
    entropy_term: str = "step"
    span_aggregate: str = "mean"
    dependency_steps: str = "all"
    critical_dependencies: int = 1
    validate: bool = True
    random_controls: int = 4
    refine_below: float = 0.8
    calibration: AnswerCalibration | None = None
    own_explanation: bool = True
    chain: str | None = None
    step_strategy: str = "auto"
    chat: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.decision_score not in DECISION_SCORES:
            raise ValueError(f"decision_score must be one of {DECISION_SCORES}, got {self.decision_score!r}")
        if self.attention_aggregate not in ATTENTION_AGGREGATES and not self.attention_aggregate.startswith("group:"):
            raise ValueError(
                f"attention_aggregate must be one of {ATTENTION_AGGREGATES} or group:<name>, "
                f"got {self.attention_aggregate!r}"
            )
        if self.entropy_term not in ("step", "none"):
            raise ValueError(f"entropy_term must be 'step' or 'none', got {self.entropy_term!r}")
        if self.dependency_steps not in ("all", "decisions"):
            raise ValueError(f"dependency_steps must be 'all' or 'decisions', got {self.dependency_steps!r}")
        if self.rollout_memory_mb <= 0:
            raise ValueError(f"rollout_memory_mb must be positive, got {self.rollout_memory_mb}")
        if self.alternatives < 1 or self.max_decision_points < 0 or self.random_controls < 1:
            raise ValueError("alternatives and random_controls must be at least 1, max_decision_points at least 0")
        if self.calibration is not None and not isinstance(self.calibration, AnswerCalibration):
            raise ValueError(
                "calibration must be an AnswerCalibration (load_model(...).calibration) or None, "
                f"got {type(self.calibration).__name__}"
            )


def check_question(question: Any) -> str:
    """The question, or a ValueError that says what is wrong with it."""
    if not isinstance(question, str):
        raise ValueError(f"the question must be text, got {type(question).__name__}")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("the question is not valid UTF-8 text; re-encode it as UTF-8") from error
    if not question.strip():
        raise ValueError("the question is empty; ask something, e.g. 'If 3x + 2 = 14, what is x?'")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"the question has {len(question)} characters; the limit is {MAX_QUESTION_CHARS}")
    return question.strip()


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
    try:
        opts = ExplainOptions(**options)
    except TypeError as error:
        known = [f.name for f in dataclasses.fields(ExplainOptions)]
        raise ValueError(f"{error}; the options are {known}") from error
    opts = resolve_defaults(opts, model)
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
            model, tokenizer, question, max_new_tokens=opts.max_new_tokens, top_k=opts.alternatives + 1,
            attention="full" if opts.attention_aggregate == "rollout" else "summary",
            step_strategy=opts.step_strategy, chat=opts.chat, forced=forced,
            lookup=forced is None and lookup_applies(model),  # generate's tokens in fewer passes
        )  # fmt: skip
    timer.tell("chain", text=trace.text)
    chain = Chain(trace.prompt_ids, trace.token_ids)
    answer, answer_tokens, answer_step = _locate_answer(trace)
    with timer("scoring"):
        # Rollouts, and the model's own explanation when it will be asked for, start from the chain's keys and values.
        writes_explanation = opts.own_explanation and is_sage(model) and answer is not None
        asked = writes_explanation and EXPLANATION not in trace.text
        scores = score_chain(model, chain, answer_tokens, keep_cache=asked or opts.rollouts)
    steps = _steps(trace, scores, chain, answer_step)
    with timer("decision_points"):
        decisions, top_score = _decision_points(trace, scores, chain, steps, opts, model, tokenizer)
    with timer("alternatives"):
        if opts.rollouts:
            _roll_out(model, tokenizer, chain, decisions, answer, opts, scores.cache)
    with timer("dependencies"):
        _dependencies(model, tokenizer, question, trace, chain, steps, decisions, opts)
    answer_confidence = math.exp(float(trace.logprobs[answer_tokens].sum())) if answer_tokens else None
    report = Report(
        model=model_name or getattr(model, "name_or_path", "") or type(model).__name__,
        question=question,
        prompt=trace.prompt,
        prompt_ids=trace.prompt_ids.tolist(),
        chain=trace.text,
        finish_reason=trace.finish_reason,
        answer=answer,
        answer_confidence=answer_confidence,
        calibrated_answer_confidence=None
        if opts.calibration is None or not answer_tokens
        else opts.calibration.confidence(scores.answer_logits, trace.token_ids[answer_tokens]),
        temperature=opts.calibration.temperature if opts.calibration else None,
        calibration=opts.calibration.method if opts.calibration else None,
        tokens=_tokens(trace),
        steps=steps,
        decision_points=decisions,
        top_decision_score=top_score,
        claims=[],
        options=dataclasses.asdict(opts),
    )
    with timer("claims"):
        report.claims = make_claims(report, opts)
    if writes_explanation:
        with timer("own_explanation"):
            _own_explanation(model, tokenizer, chain, trace, report, scores.cache)
    if opts.validate:
        from .validate import validate_and_refine

        with timer("validation"):
            # The scoring pass above is teacher-forced and reads no earlier cache, as validation's own would be.
            validate_and_refine(report, model, tokenizer, scores)
    report.timings = timer.seconds
    return report


# --- the answer and the steps -------------------------------------------------------------------------


def _locate_answer(trace: ReasoningTrace) -> tuple[str | None, list[int], int | None]:
    """The chain's answer, the generated tokens that spell it, and the step that holds it."""
    answer = extract_answer(trace.text)
    if answer is None:
        return None, [], None
    if "<|answer|>" in trace.text:
        at = trace.text.index("<|answer|>") + len("<|answer|>")
        for step in trace.steps:
            if step.char_start >= at:
                return answer, list(range(step.token_start, step.token_end)), step.index
    where = trace.text.rfind(answer)
    ends = trace.token_char_ends
    starts = [0, *ends[:-1]]
    tokens = [t for t in range(len(ends)) if starts[t] < where + len(answer) and ends[t] > where]
    holder = next((s.index for s in trace.steps if s.char_start <= where < s.char_end), None)
    return answer, tokens, holder


def _steps(trace: ReasoningTrace, scores: Scores, chain: Chain, answer_step: int | None) -> list[Step]:
    probs = trace.logprobs.exp()
    entropies = trace.normalized_entropies
    steps = []
    for span in trace.steps:
        tokens = range(span.token_start, span.token_end)
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
                min_prob=float(probs[span.token_start : span.token_end].min()),
                entropy=float(entropies[span.token_start : span.token_end].mean()),
                meta_confidence=meta,
                is_answer=span.index == answer_step,
            )
        )
    return steps


def _tokens(trace: ReasoningTrace) -> list[TokenRecord]:
    owner = {t: s.index for s in trace.steps for t in range(s.token_start, s.token_end)}
    entropies = trace.normalized_entropies
    return [
        TokenRecord(index=t, id=int(trace.token_ids[t]), token=trace.tokens[t], prob=math.exp(float(trace.logprobs[t])),
                    entropy=float(entropies[t]), step=owner.get(t))
        for t in range(trace.num_tokens)
    ]  # fmt: skip


# --- decision points and alternatives ------------------------------------------------------------------


def resolve_defaults(opts: ExplainOptions, model: PreTrainedModel) -> ExplainOptions:
    """The options with every "auto" / None replaced by what it means for this model (the report records these)."""
    attention = opts.attention_aggregate
    if attention == "auto":
        attention = "group:reasoning" if "reasoning" in head_groups(model) else "mean"
    layer = opts.gradient_layer
    if layer is None:
        layer = model.config.num_hidden_layers // 2 if is_sage(model) else 0
    return dataclasses.replace(
        opts, attention_aggregate=attention, gradient_layer=layer, decision_score=_decision_mode(opts, model)
    )


def _decision_mode(opts: ExplainOptions, model: PreTrainedModel) -> str:
    if opts.decision_score != "auto":
        return opts.decision_score
    return "combined" if is_sage(model) else "entropy"


def decision_scores(
    mode: str, entropies: torch.Tensor, margins: torch.Tensor, meta: torch.Tensor | None
) -> torch.Tensor:
    """(T,) the decision score of every generated token under `mode` (see `ExplainOptions.decision_score`)."""
    if mode == "entropy":
        return entropies
    if mode == "margin":
        return 1 - margins
    if meta is None:
        raise ValueError(f"decision_score={mode!r} needs a SAGE model with a meta-cognitive head")
    return meta if mode == "meta" else torch.maximum(entropies, meta)


def meta_at_step_starts(scores: Scores, chain: Chain, separators: set[int]) -> torch.Tensor | None:
    """(T,) the meta head's decision probability where the predicting position is a step separator (where it
    was trained), 0 elsewhere."""
    if scores.meta_decision is None:
        return None
    positions = chain.predicting(range(len(chain.token_ids)))
    inputs = chain.inputs
    return torch.tensor([float(scores.meta_decision[p]) if int(inputs[p]) in separators else 0.0 for p in positions])


def step_separators(model: PreTrainedModel) -> set[int]:
    return set(getattr(model.config, "step_separator_token_ids", None) or [])


def _decision_points(
    trace: ReasoningTrace, scores: Scores, chain: Chain, steps: list[Step], opts: ExplainOptions, model, tokenizer
) -> tuple[list[DecisionPoint], float | None]:
    """The decision points, and the highest decision score of any token in a step (for a report that has none:
    how close the closest call came)."""
    mode = opts.decision_score  # resolved by `resolve_defaults`
    meta = meta_at_step_starts(scores, chain, step_separators(model))
    top = trace.topk_logprobs.exp()
    margins = top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0)
    score = decision_scores(mode, trace.normalized_entropies, margins, meta)
    owner = {t: s.index for s in steps for t in range(s.token_start, s.token_end)}
    in_steps = [t for t in range(trace.num_tokens) if t in owner]
    top_score = max((float(score[t]) for t in in_steps), default=None)
    candidates = [t for t in in_steps if float(score[t]) >= opts.threshold]
    chosen = sorted(sorted(candidates, key=lambda t: -float(score[t]))[: opts.max_decision_points])
    points = []
    for t in chosen:
        alternatives = [
            Alternative(token=tok, token_id=int(tid), prob=math.exp(float(lp)), chain="", answer=None,
                        outcome="no_answer")
            for tid, tok, lp in zip(trace.topk_ids[t], trace.topk_tokens[t], trace.topk_logprobs[t], strict=True)
            if int(tid) != int(trace.token_ids[t])
        ][: opts.alternatives]  # fmt: skip
        points.append(
            DecisionPoint(
                position=t,
                step=owner[t],
                token=trace.tokens[t],
                prob=math.exp(float(trace.logprobs[t])),
                score=float(score[t]),
                entropy=float(trace.normalized_entropies[t]),
                margin=float(margins[t]),
                meta_score=None if meta is None else float(meta[t]),
                alternatives=alternatives,
            )
        )
    return points, top_score


def chain_end(model: PreTrainedModel, chain: Chain, opts: ExplainOptions) -> int:
    """The last position a chain (or a branch of it) may reach: the token budget, within the context."""
    end = chain.prompt_len + max(opts.max_new_tokens, len(chain.token_ids))
    return min(end, context_length(model) or end)


def rollout_batch(model: PreTrainedModel, positions: int, memory_mb: float) -> int:
    """How many branches are rolled out together: as many caches of `positions` positions as fit in `memory_mb`."""
    return max(1, int(memory_mb * 2**20 // (kv_cache_bytes_per_token(model) * positions)))


def _roll_out(model, tokenizer, chain: Chain, decisions, answer, opts, states=None) -> None:
    """Rolls every alternative of every decision point out, as many branches per batch as `rollout_memory_mb`
    allows; fills in chains, answers and outcomes. `states`: the chain's keys and values, when at hand."""
    eos = eos_ids(model)
    sequence = torch.cat([chain.prompt_ids, chain.token_ids])
    branches = [(chain.prompt_len + d.position, a) for d in decisions for a in d.alternatives]
    end = chain_end(model, chain, opts)
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


# --- dependencies (eq. 7) -----------------------------------------------------------------------------


def attention_rows(trace: ReasoningTrace, model: PreTrainedModel, how: str) -> torch.Tensor:
    """(T, N): for every generated token, the attention of the position predicting it over the input
    positions (N = P + T − 1), aggregated over layers and heads as `how` says."""
    if how == "rollout":
        maps = trace.attention_maps.float().mean(1)  # (L, N, N) mean over heads
        eye = torch.eye(maps.shape[-1])
        rolled = eye
        for layer in maps:
            mixed = 0.5 * layer + 0.5 * eye
            rolled = (mixed / mixed.sum(-1, keepdim=True)) @ rolled
        start = len(trace.prompt_ids) - 1
        return rolled[start : start + trace.num_tokens]
    summary = trace.attention.float()  # (T, L, G, N)
    sizes = torch.tensor(list(head_groups(model).values()), dtype=torch.float)
    if how.startswith("group:"):
        name = how.removeprefix("group:")
        if name not in trace.head_groups:
            raise ValueError(f"unknown head group {name!r}; the model has {trace.head_groups}")
        return summary[:, :, trace.head_groups.index(name)].mean(1)
    layers = summary[:, -1:] if how == "last" else summary
    return (layers * (sizes / sizes.sum())[None, None, :, None]).sum(2).mean(1)


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
        significance = weight * gradient * entropy
        units = in_question + [u for k in range(step.index) for u in in_steps.get(k, [])]
        step.dependencies = rank_units(units, significance, weight, gradient, opts.span_aggregate)


def rank_units(units: list[SpanRef], significance, attention, gradient, how: str) -> list[DependencyScore]:
    """Units scored by significance (aggregated over their tokens), highest first, with their share."""
    scored = [
        (unit, aggregate(significance, unit.positions, how), aggregate(attention, unit.positions, how),
         aggregate(gradient, unit.positions, how))
        for unit in units
    ]  # fmt: skip
    total = sum(s for _, s, _, _ in scored) or 1.0
    scored.sort(key=lambda row: -row[1])
    return [
        DependencyScore(span=unit, significance=sig,
                        share=sig / total, attention=att, gradient=grad)
        for unit, sig, att, grad in scored
    ]  # fmt: skip


# --- the model's own explanation (SAGE, stage 3) -----------------------------------------------------------


def _own_explanation(model, tokenizer, chain: Chain, trace: ReasoningTrace, report: Report, cache=None) -> None:
    """The explanation the model writes after `<|explanation|>`: already in the chain, or asked for."""
    marker = EXPLANATION
    if marker in trace.text:
        at = trace.text.index(marker) + len(marker)
        starts = [0, *trace.token_char_ends[:-1]]
        tokens = [t for t in range(trace.num_tokens) if starts[t] >= at]
        text = trace.text[at:]
        probs = trace.logprobs[tokens].exp().tolist()
    else:
        text, probs = _ask_for_explanation(model, tokenizer, chain, marker, cache)
    if text.strip():
        report.own_explanation = OwnExplanation(text=text.strip(), mean_prob=sum(probs) / max(len(probs), 1))
        report.claims.extend(own_explanation_claims(report))


def _ask_for_explanation(model, tokenizer, chain: Chain, marker: str, cache=None) -> tuple[str, list[float]]:
    """Greedy decoding after the marker. Lookup decoding drafts from the chain and from examples of the stage-3
    format: the same text as `generate` (tests/test_lookup_decoding.py) in about a third of the forward passes.
    `cache`: the keys and values of the chain's inputs (the scoring pass's), a prefix of what is decoded from."""
    explanation_id = tokenizer.convert_tokens_to_ids(marker)
    if explanation_id is None or explanation_id == tokenizer.unk_token_id:
        return "", []
    eos = eos_ids(model)
    ids = chain.token_ids.tolist()
    if ids and ids[-1] in eos:
        ids = ids[:-1]
    prefix = [*chain.prompt_ids.tolist(), *ids, explanation_id]
    room = min(96, (context_length(model) or 10**9) - len(prefix))
    if room < 1:
        return "", []
    new, probs = lookup_greedy(model, prefix, room, eos, explanation_pool(tokenizer), cache=cache)
    return decode_chain(tokenizer, new, eos), probs
