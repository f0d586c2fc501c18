"""The interactive questions a reader asks of an explanation, answered by measuring the model again:

- `why_over(report, position, alternative)`: why the chosen token over an alternative at a decision point —
  both probabilities, both rollouts and answers, and the spans that favour each, by contrastive attribution
  (gradient × (input − mask) of log p(A) − log p(B) on the embeddings), each side's top span checked by masking it;
- `what_if(report, question)`: the question edited and explained again, with a diff — steps changed, decision
  points that appeared or vanished, the answer, and the dependencies the edit hit;
- `simpler_way(report, n, temperature)`: n sampled chains; those that reach the same answer and are shorter are
  explained, shortest first, and the first whose claims pass validation is returned beside the original.

Each result has `.text(depth)` (novice / intermediate / expert), written by `render/interact.py` from its
measurements, so switching depth never recomputes anything. Like the report, every number in them was measured
by the call that made it.
"""

from __future__ import annotations

import difflib
import re
from typing import Literal

import torch
from pydantic import Field
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..decoding import Chain, eos_ids, pad_id
from .alternatives import branch_rollouts, chain_end, decode_chain
from .answers import extract_answer, outcome
from .engine import Progress, explain
from .measure import ablate, embeddings_require_grad, replacement_id
from .render.interact import comparison_text, counterfactual_text, simplification_text
from .report import DecisionPoint, Outcome, Report, SpanRef, StrictModel, Validation

MAX_SAMPLES = 16


def _options(report: Report, **changes) -> dict:
    """The options the report was made with, as `explain`'s keyword arguments, with some changed."""
    return {**dict(report.options), **changes}


# --- why A over B ---------------------------------------------------------------------------------------


class Branch(StrictModel):
    """One side of a comparison: the token, its probability, and the chain it leads to."""

    token: str
    token_id: int
    prob: float
    chain: str
    answer: str | None
    outcome: Outcome | None = Field(description="against the original answer; None for the chosen side")


class ContrastScore(StrictModel):
    """How much a span pushes the choice towards the chosen token (positive) or the alternative (negative)."""

    span: SpanRef
    score: float = Field(
        description="sum over the span's tokens of gradient × (input − mask embedding) of log p(A) − log p(B)"
    )


class MaskCheck(StrictModel):
    """The top span of one side masked: the log-odds must move against that side."""

    side: Literal["chosen", "alternative"]
    span: SpanRef
    log_odds_before: float
    log_odds_after: float
    verified: bool


class Comparison(StrictModel):
    """Why the model chose token A over token B at a decision point."""

    position: int
    step: int | None
    step_text: str
    chosen: Branch
    alternative: Branch
    log_odds: float = Field(description="log p(A) − log p(B) at the decision point")
    favour_chosen: list[ContrastScore]
    favour_alternative: list[ContrastScore]
    checks: list[MaskCheck]

    def text(self, depth: str = "intermediate") -> str:
        """The result in words at a depth: novice, intermediate or expert."""
        return comparison_text(self, depth)


def decision_point(report: Report, position: int) -> DecisionPoint:
    """The decision point, or hesitation (a candidate whose alternatives kept the answer), at `position`."""
    candidates = [*report.decision_points, *report.hesitations]
    for point in candidates:
        if point.position == position:
            return point
    known = sorted(p.position for p in candidates)
    raise ValueError(f"no decision point at position {position}; the report has decision points at {known}")


def why_over(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    report: Report,
    position: int,
    alternative: int | None = None,
    spans: int = 5,
) -> Comparison:
    """Compares the chosen token at a decision point with one of its alternatives (token id; default: the most
    likely alternative)."""
    point = decision_point(report, position)
    if not point.alternatives:
        raise ValueError(f"the decision point at position {position} has no alternatives to compare")
    if alternative is None:
        alt = point.alternatives[0]
    else:
        alt = next((a for a in point.alternatives if a.token_id == alternative), None)
        if alt is None:
            known = [a.token_id for a in point.alternatives]
            raise ValueError(f"token id {alternative} is not an alternative at position {position}; use one of {known}")
    model.eval()
    chain = Chain.from_report(report)
    chosen_id = int(chain.token_ids[position])
    alt_chain, alt_answer = alt.chain, alt.answer
    if not alt_chain:  # the report was made without rollouts
        alt_chain, alt_answer = _roll_out(model, tokenizer, report, chain, position, alt.token_id)
    log_odds, contributions = contrastive_contributions(model, tokenizer, chain, position, chosen_id, alt.token_id)
    step = report.steps[point.step] if point.step is not None else None
    units = _units_before(report, point.step, chain.prompt_len + position)
    scored = sorted(
        (ContrastScore(span=u, score=float(contributions[u.positions].sum())) for u in units), key=lambda s: -s.score
    )
    favour_chosen = [s for s in scored if s.score > 0][:spans]
    favour_alternative = [s for s in reversed(scored) if s.score < 0][:spans]
    checks = _mask_checks(
        model, tokenizer, chain, position, chosen_id, alt.token_id, log_odds, favour_chosen[:1], favour_alternative[:1]
    )
    return Comparison(
        position=position,
        step=point.step,
        step_text=step.text if step else "",
        chosen=Branch(
            token=point.token,
            token_id=chosen_id,
            prob=point.prob,
            chain=report.chain,
            answer=report.answer,
            outcome=None,
        ),
        alternative=Branch(
            token=alt.token,
            token_id=alt.token_id,
            prob=alt.prob,
            chain=alt_chain,
            answer=alt_answer,
            outcome=outcome(alt_answer, report.answer),
        ),
        log_odds=log_odds,
        favour_chosen=favour_chosen,
        favour_alternative=favour_alternative,
        checks=checks,
    )


def _roll_out(model, tokenizer, report: Report, chain: Chain, position: int, token_id: int) -> tuple[str, str | None]:
    sequence = torch.cat([chain.prompt_ids, chain.token_ids])
    k = chain.prompt_len + position
    end = chain_end(model, chain, report.options.max_new_tokens)
    (continuation,) = branch_rollouts(model, sequence, [(k, token_id)], end)
    text = decode_chain(tokenizer, sequence[chain.prompt_len : k].tolist() + continuation, eos_ids(model))
    return text, extract_answer(text)


def _units_before(report: Report, step: int | None, limit: int) -> list[SpanRef]:
    """The spans the decision can rest on: the ones its step's dependencies were ranked over, before it."""
    if step is None or not report.steps[step].dependencies:
        raise ValueError(
            "the report ranked no dependencies for this decision point's step; explain it again with "
            "dependency_steps='all'"
        )
    return [d.span for d in report.steps[step].dependencies if max(d.span.positions) < limit]


def contrastive_contributions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    chain: Chain,
    position: int,
    chosen_id: int,
    other_id: int,
) -> tuple[float, torch.Tensor]:
    """log p(A) − log p(B) for generated token `position`, and for every input position before it the signed
    gradient × (input − baseline) of that difference on the embeddings, the baseline being the embedding of the
    masking token: a first-order estimate of what masking the position would do (positive: it favours A).
    Plain gradient × input ranked a clause above the number a copy model copies; against the mask baseline the
    copied number came first on all 8 development questions."""
    inputs = torch.cat([chain.prompt_ids, chain.token_ids])[: chain.prompt_len + position][None].to(model.device)
    with torch.no_grad():
        masked = torch.full_like(inputs, replacement_id(tokenizer))
        baseline = model(input_ids=masked, use_cache=False, logits_to_keep=1, output_hidden_states=True)
        baseline = baseline.hidden_states[0][0].float()
    with embeddings_require_grad(model):
        out = model(input_ids=inputs, use_cache=False, logits_to_keep=1, output_hidden_states=True)
        logp = out.logits[0, -1].float().log_softmax(-1)
        difference = logp[chosen_id] - logp[other_id]
        embeddings = out.hidden_states[0]
        (grad,) = torch.autograd.grad(difference, embeddings)
    contributions = (grad[0].float() * (embeddings[0].detach().float() - baseline)).sum(-1).cpu()
    return difference.item(), contributions


@torch.no_grad()
def _log_odds(model, rows: torch.Tensor, chosen_id: int, other_id: int) -> torch.Tensor:
    logp = model(input_ids=rows.to(model.device), use_cache=False, logits_to_keep=1).logits[:, -1].float()
    logp = logp.log_softmax(-1)
    return (logp[:, chosen_id] - logp[:, other_id]).cpu()


def _mask_checks(model, tokenizer, chain, position, chosen_id, other_id, before, top_chosen, top_alternative):
    inputs = torch.cat([chain.prompt_ids, chain.token_ids])[: chain.prompt_len + position]
    sides = [("chosen", s) for s in top_chosen] + [("alternative", s) for s in top_alternative]
    if not sides:
        return []
    rows = ablate(inputs, [score.span.positions for _, score in sides], replacement_id(tokenizer))
    after = _log_odds(model, rows, chosen_id, other_id)
    return [
        MaskCheck(
            side=side,
            span=score.span,
            log_odds_before=before,
            log_odds_after=float(value),
            verified=float(value) < before if side == "chosen" else float(value) > before,
        )
        for (side, score), value in zip(sides, after, strict=True)
    ]


# --- what if ----------------------------------------------------------------------------------------------


class Edit(StrictModel):
    """One change between the two questions, in the original question's characters."""

    start: int
    end: int
    before: str
    after: str


class StepChange(StrictModel):
    index: int = Field(description="index in the new chain (or in the old one, for a removed step)")
    change: Literal["same", "changed", "added", "removed"]
    before: str | None
    after: str | None


class DecisionChange(StrictModel):
    """A decision point, matched between the chains by its step and token."""

    step: int | None
    token: str
    change: Literal["kept", "appeared", "vanished"]
    prob_before: float | None
    prob_after: float | None


class DependencyHit(StrictModel):
    """A span of the original question that the edit touched, and how much an original step rested on it."""

    step: int
    span: SpanRef
    rank: int = Field(description="1 = the step's most significant dependency")
    share: float


class Counterfactual(StrictModel):
    """The diff between a report and the report of an edited question."""

    question_before: str
    question_after: str
    edits: list[Edit]
    answer_before: str | None
    answer_after: str | None
    answer_changed: bool
    steps: list[StepChange]
    decision_points: list[DecisionChange]
    hits: list[DependencyHit]
    report: Report = Field(description="the edited question's full report")

    def text(self, depth: str = "intermediate") -> str:
        """The result in words at a depth: novice, intermediate or expert."""
        return counterfactual_text(self, depth)


_WORD = re.compile(r"\S+|\s+")


def question_edits(before: str, after: str) -> list[Edit]:
    """The word-level changes that turn `before` into `after`, as character ranges of `before`."""
    a, b = _WORD.findall(before), _WORD.findall(after)
    a_starts = [0]
    for piece in a:
        a_starts.append(a_starts[-1] + len(piece))
    edits = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            edits.append(Edit(start=a_starts[i1], end=a_starts[i2], before="".join(a[i1:i2]), after="".join(b[j1:j2])))
    return edits


def step_changes(before: Report, after: Report) -> list[StepChange]:
    old, new = [s.text.strip() for s in before.steps], [s.text.strip() for s in after.steps]
    changes = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if tag == "equal":
            changes += [StepChange(index=j, change="same", before=new[j], after=new[j]) for j in range(j1, j2)]
            continue
        pairs = min(i2 - i1, j2 - j1) if tag == "replace" else 0
        for k in range(pairs):
            changes.append(StepChange(index=j1 + k, change="changed", before=old[i1 + k], after=new[j1 + k]))
        changes += [StepChange(index=j, change="added", before=None, after=new[j]) for j in range(j1 + pairs, j2)]
        changes += [StepChange(index=i, change="removed", before=old[i], after=None) for i in range(i1 + pairs, i2)]
    return changes


def decision_changes(before: Report, after: Report) -> list[DecisionChange]:
    old = {(d.step, d.token): d for d in before.decision_points}
    new = {(d.step, d.token): d for d in after.decision_points}
    changes = []
    for key in [*old, *(k for k in new if k not in old)]:
        was, now = old.get(key), new.get(key)
        change = "kept" if was and now else "vanished" if was else "appeared"
        before, after_ = (was.prob if was else None), (now.prob if now else None)
        changes.append(DecisionChange(step=key[0], token=key[1], change=change, prob_before=before, prob_after=after_))
    return changes


def dependency_hits(report: Report, edits: list[Edit]) -> list[DependencyHit]:
    """The question spans each original step was ranked on that overlap an edit (an insertion touches the span
    it lands in or next to)."""
    hits = []
    for step in report.steps:
        for rank, dep in enumerate(step.dependencies, start=1):
            span = dep.span
            if span.source == "question" and any(_touches(span, e) for e in edits):
                hits.append(DependencyHit(step=step.index, span=span, rank=rank, share=dep.share))
    return hits


def _touches(span: SpanRef, edit: Edit) -> bool:
    if edit.start == edit.end:  # an insertion touches the span it lands in or next to
        return span.start <= edit.start <= span.end
    return span.start < edit.end and edit.start < span.end


def what_if(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    report: Report,
    question: str,
    progress: Progress | None = None,
) -> Counterfactual:
    """Explains the edited question with the report's options and returns the diff against the report."""
    after = explain(
        model, tokenizer, question, model_name=report.model, progress=progress, **_options(report, chain=None)
    )
    edits = question_edits(report.question, after.question)
    return Counterfactual(
        question_before=report.question,
        question_after=after.question,
        edits=edits,
        answer_before=report.answer,
        answer_after=after.answer,
        answer_changed=(report.answer or "").strip() != (after.answer or "").strip(),
        steps=step_changes(report, after),
        decision_points=decision_changes(report, after),
        hits=dependency_hits(report, edits),
        report=after,
    )


# --- a simpler way ----------------------------------------------------------------------------------------


class Candidate(StrictModel):
    """One sampled chain and what became of it."""

    chain: str
    answer: str | None
    tokens: int
    steps: int | None = Field(default=None, description="steps, once the chain was explained")
    validation_score: float | None = Field(default=None, description="share of its claims verified, before refinement")
    verdict: Literal[
        "simpler", "not_checked", "longer", "different_answer", "failed_validation", "duplicate", "same_as_original"
    ]


class Simplification(StrictModel):
    """The shortest sampled chain that reaches the same answer and passes validation, beside the original."""

    n: int
    temperature: float
    seed: int
    original_tokens: int
    original_steps: int
    original_validation: float | None
    candidates: list[Candidate]
    simpler: Candidate | None
    report: Report | None = Field(default=None, description="the simpler chain's full report")

    def text(self, depth: str = "intermediate") -> str:
        """The result in words at a depth: novice, intermediate or expert."""
        return simplification_text(self, depth)


@torch.no_grad()
def sample_chains(model, tokenizer, report: Report, n: int, temperature: float, seed: int) -> list[tuple[str, int]]:
    """n chains sampled from the report's prompt (seeded: the same seed gives the same chains), each with its
    length in tokens (end-of-sequence not counted)."""
    prompt = torch.tensor(report.prompt_ids)[None].to(model.device)
    budget = report.options.max_new_tokens
    pad = pad_id(model) or 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=budget,
            num_return_sequences=n,
            pad_token_id=pad,
        )
    eos = eos_ids(model)
    chains = []
    for row in out[:, prompt.shape[1] :].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        chains.append((decode_chain(tokenizer, row[:cut], eos), chain_tokens(row[:cut], eos)))
    return chains


def first_score(validation: Validation) -> float:
    """The validation score before any refinement removed refuted claims."""
    return validation.score


def chain_tokens(ids: list[int], eos: set[int]) -> int:
    """A chain's length in tokens, a final end-of-sequence token not counted."""
    return len(ids) - (1 if ids and ids[-1] in eos else 0)


def simpler_way(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    report: Report,
    n: int = 8,
    temperature: float = 0.8,
    seed: int = 0,
    max_checks: int = 3,
    progress: Progress | None = None,
) -> Simplification:
    """Samples n chains; explains those with the same answer and fewer tokens, shortest first (at most
    `max_checks`), and returns the first whose claims pass validation (score ≥ the report's refine threshold)."""
    if not 1 <= n <= MAX_SAMPLES:
        raise ValueError(f"n must be between 1 and {MAX_SAMPLES}, got {n}")
    if not 0 < temperature <= 2:
        raise ValueError(f"temperature must be in (0, 2], got {temperature}")
    if report.answer is None:
        raise ValueError("the original chain has no answer, so no other chain can reach the same one")
    if progress:
        progress("phase", {"name": "sampling"})
    original_tokens = chain_tokens([t.id for t in report.tokens], eos_ids(model))
    candidates, seen = [], set()
    for text, tokens in sample_chains(model, tokenizer, report, n, temperature, seed):
        answer = extract_answer(text)
        verdict = "not_checked"
        if text.strip() in seen:
            verdict = "duplicate"
        elif text.strip() == report.chain.strip():
            verdict = "same_as_original"
        elif outcome(answer, report.answer) != "same_answer":
            verdict = "different_answer"
        elif tokens >= original_tokens:
            verdict = "longer"
        seen.add(text.strip())
        candidates.append(Candidate(chain=text, answer=answer, tokens=tokens, verdict=verdict))
    threshold = report.options.refine_below
    simpler = simpler_report = None
    shortlist = sorted((c for c in candidates if c.verdict == "not_checked"), key=lambda c: c.tokens)[:max_checks]
    for candidate in shortlist:
        checked = explain(
            model,
            tokenizer,
            report.question,
            model_name=report.model,
            progress=progress,
            **_options(report, chain=candidate.chain, validate=True),
        )
        first = first_score(checked.validation)
        candidate.steps, candidate.validation_score = len(checked.steps), first
        candidate.verdict = "simpler" if first >= threshold else "failed_validation"
        if candidate.verdict == "simpler":
            simpler, simpler_report = candidate, checked
            break
    original = report.validation
    return Simplification(
        n=n,
        temperature=temperature,
        seed=seed,
        original_tokens=original_tokens,
        original_steps=len(report.steps),
        original_validation=None if original is None else first_score(original),
        candidates=candidates,
        simpler=simpler,
        report=simpler_report,
    )
