"""The prose of the interactive answers (`inverse/interact.py`): why A over B, what if, and a simpler way."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .words import TOP_SPANS, check_depth, in_step, pct, quote, step_name

if TYPE_CHECKING:  # the measurements' models; interact.py imports this module
    from ..interact import (
        Branch,
        Comparison,
        ContrastScore,
        Counterfactual,
        DependencyHit,
        Edit,
        MaskCheck,
        Simplification,
        StepChange,
    )


# --- why A over B ---------------------------------------------------------------------------------------


def comparison_text(comparison: Comparison, depth: str) -> str:
    """Why the model chose A over B, at a depth: the two sides, what pushed towards each, and the mask checks."""
    check_depth(depth)
    a, b = comparison.chosen, comparison.alternative
    where = step_name(comparison.step, depth)
    lines = [
        f"In {where} the model wrote {quote(a.token)} ({pct(a.prob)} likely) rather than {quote(b.token)} "
        f"({pct(b.prob)})."
    ]
    lines.append(_consequence(a, b))
    top = TOP_SPANS[depth]
    lines.append(_side_sentence("towards", a.token, comparison.favour_chosen[:top], depth))
    lines.append(_side_sentence("towards", b.token, comparison.favour_alternative[:top], depth))
    lines.extend(_check_sentence(check, depth) for check in comparison.checks)
    if depth == "expert":
        lines.append(
            f"log p(A) − log p(B) = {comparison.log_odds:.3f} at chain position {comparison.position} (token ids "
            f"{a.token_id} vs {b.token_id}); span scores: gradient × (input − mask embedding), summed over the span's "
            "tokens."
        )
    return "\n".join(line for line in lines if line)


def _consequence(a: Branch, b: Branch) -> str:
    if b.outcome == "same_answer":
        return f"Both lead to the same answer, {quote(a.answer or '')}."
    if b.outcome == "different_answer":
        return f"Choosing {quote(b.token)} would have led to the answer {quote(b.answer or '')} instead of " + (
            f"{quote(a.answer)}." if a.answer is not None else "no answer."
        )
    return f"Choosing {quote(b.token)} would have led to no answer at all."


def _span_name(score: ContrastScore, depth: str) -> str:
    span = score.span
    where = "the question" if span.source == "question" else step_name(span.step, depth)
    number = f" ({score.score:+.3f})" if depth == "expert" else ""
    return f"{quote(span.text)} in {where}{number}"


def _side_sentence(direction: str, token: str, scores: list[ContrastScore], depth: str) -> str:
    if not scores:
        return f"Nothing in the input pushed {direction} {quote(token)}."
    names = ", ".join(_span_name(s, depth) for s in scores)
    return f"What pushed most {direction} {quote(token)}: {names}."


def _check_sentence(check: MaskCheck, depth: str) -> str:
    side = "chosen token" if check.side == "chosen" else "alternative"
    verdict = "confirmed" if check.verified else "not confirmed"
    if depth == "novice":
        return f"Hiding {quote(check.span.text)} and asking again {verdict} that it favours the {side}."
    return (
        f"Masking {quote(check.span.text)} moved the log-odds from {check.log_odds_before:.2f} to "
        f"{check.log_odds_after:.2f}: {verdict} as favouring the {side}."
    )


# --- what if ----------------------------------------------------------------------------------------------


def counterfactual_text(counterfactual: Counterfactual, depth: str) -> str:
    """What editing the question changed, at a depth: the edits, the answer, the steps, decisions and hits."""
    check_depth(depth)
    cf = counterfactual
    lines = [_edits_sentence(cf.edits)]
    if cf.answer_changed:
        lines.append(
            f"The answer changed from {quote(cf.answer_before or 'none')} to {quote(cf.answer_after or 'none')}."
        )
    else:
        lines.append(f"The answer stayed {quote(cf.answer_after or 'none')}.")
    changed = [s for s in cf.steps if s.change != "same"]
    lines.append(f"{len(changed)} of {len(cf.steps)} steps changed." if changed else "No step of the chain changed.")
    if depth != "novice":
        lines.extend(_step_change_line(s) for s in changed)
    for kind in ("appeared", "vanished"):
        points = [d for d in cf.decision_points if d.change == kind]
        if points:
            names = ", ".join(f"{quote(d.token)} {in_step(d.step, depth)}" for d in points)
            lines.append(f"Decision points that {kind}: {names}.")
    lines.append(_hits_sentence(cf.hits, depth))
    return "\n".join(lines)


def _edits_sentence(edits: list[Edit]) -> str:
    if not edits:
        return "The question did not change."
    parts = []
    for e in edits:
        if not e.after:
            parts.append(f"removed {quote(e.before)}")
        elif not e.before:
            parts.append(f"added {quote(e.after)}")
        else:
            parts.append(f"changed {quote(e.before)} to {quote(e.after)}")
    return "You " + "; ".join(parts) + "."


def _step_change_line(change: StepChange) -> str:
    if change.change == "added":
        return f"  + new step {change.index + 1}: {quote(change.after or '')}"
    if change.change == "removed":
        return f"  − step {change.index + 1} is gone: {quote(change.before or '')}"
    return f"  ~ step {change.index + 1}: {quote(change.before or '')} → {quote(change.after or '')}"


def _hits_sentence(hits: list[DependencyHit], depth: str) -> str:
    if not hits:
        return "The edit touched no span that the original steps were measured to rest on."
    top = sorted(hits, key=lambda h: (h.rank, -h.share))[: TOP_SPANS[depth]]
    parts = []
    for hit in top:
        rank = f"its dependency ranked {hit.rank}" if depth != "novice" else "something it relied on"
        share = f", {pct(hit.share)} of its dependency score" if depth == "expert" else ""
        parts.append(f"{quote(hit.span.text)}, {rank} for {step_name(hit.step, depth)}{share}")
    return "The edit hit " + "; ".join(parts) + "."


# --- a simpler way ----------------------------------------------------------------------------------------


def simplification_text(simplification: Simplification, depth: str) -> str:
    """What sampling found, at a depth: how many chains reached the answer, and the simpler one or why none."""
    check_depth(depth)
    sm = simplification
    distinct = [c for c in sm.candidates if c.verdict != "duplicate"]
    same = sum(c.verdict != "different_answer" for c in distinct)
    sampled = (
        f"Of {sm.n} chains sampled at temperature {sm.temperature:g}, {len(distinct)} were distinct and "
        f"{same} of those reached the same answer."
    )
    if sm.simpler is None:
        reasons = {c.verdict for c in sm.candidates}
        if "failed_validation" in reasons:
            why = "the shorter ones failed validation"
        elif reasons & {"longer", "same_as_original"}:
            why = "none with the same answer was shorter than the original"
        else:
            why = "none reached the same answer"
        return f"{sampled} No simpler way was found: {why}."
    s = sm.simpler
    lines = [sampled]
    if depth == "novice":
        checked = pct(s.validation_score or 0)
        lines.append(
            f"A shorter way: {s.steps} steps instead of {sm.original_steps}, same answer, and "
            f"{checked} of what the explanation says about it checked out."
        )
    else:
        lines.append(
            f"The shortest that passed validation has {s.tokens} tokens in {s.steps} steps, against "
            f"{sm.original_tokens} tokens in {sm.original_steps} steps; claims verified "
            f"{pct(s.validation_score or 0)}"
            + (f" (original {pct(sm.original_validation)})." if sm.original_validation is not None else ".")
        )
        lines.append(f"Simpler chain: {quote(s.chain)}")
    if depth == "expert":
        verdicts = ", ".join(f"{c.tokens} tokens → {c.verdict}" for c in sm.candidates)
        lines.append(f"Sampling seed {sm.seed}; verdicts: {verdicts}.")
    return "\n".join(lines)
