"""The explanation in natural language at three depths, and the one-line summaries the other views reuse.

- novice: plain words, short; the only numbers it writes are percentages. Text quoted from the report between
  “ ” (the answer, a span of the question, the model's own explanation) is shown as it is, digits included.
- intermediate: a paragraph per step, with step numbers, percentages and the top 3 dependencies.
- expert: every measured number, the report's options, and each claim with its status and evidence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .words import (
    TOP_SPANS,
    answer_confidence,
    check_depth,
    claim_for,
    claim_note,
    in_step,
    num,
    pairs,
    pct,
    plural,
    quote,
    span_source,
    step_confidence,
    step_name,
)

if TYPE_CHECKING:  # types only: the report's views import this package
    from ..report import Alternative, Claim, DecisionPoint, DependencyScore, Report, Step, Validation

CONFIDENT = 0.9  # a decision point above this token probability was flagged by the meta head


def render_text(report: Report, depth: str) -> str:
    """The explanation in natural language at a depth: novice, intermediate or expert."""
    check_depth(depth)
    sections = [
        _answer_text(report, depth),
        _decisions_text(report, depth),
        _steps_text(report, depth),
        _confidence_text(report, depth),
        _own_explanation_text(report, depth),
        _verification_text(report, depth),
    ]
    if depth == "expert":
        sections += [_claims_text(report), _options_text(report)]
    return "\n\n".join(section for section in sections if section)


def _answer_text(report: Report, depth: str) -> str:
    """The answer and how confident the model was in it."""
    confidence = answer_confidence(report)
    if report.answer is None:
        if depth == "novice":
            return "The model did not reach an answer."
        return f"The model gave no answer (finish reason: {report.finish_reason})."
    answer = quote(report.answer)
    answer_step = next((step.index for step in report.steps if step.is_answer), None)
    note = claim_note(claim_for(report, "confidence", answer_step, answer=report.answer), depth)
    if depth == "novice":
        sure = f", and it was about {pct(confidence)} sure{note}" if confidence is not None else ""
        return f"The model answered {answer}{sure}."
    if depth == "intermediate":
        sure = f" with {pct(confidence)} confidence{note}" if confidence is not None else ""
        return f"The model's answer is {answer}{sure}, reached in {len(report.steps)} steps."
    numbers = {
        "answer confidence": report.answer_confidence,
        f"calibrated ({report.calibration or 'temperature'})": report.calibrated_answer_confidence,
        "temperature": report.temperature,
    }
    measured = "; ".join(f"{name} {num(value)}" for name, value in numbers.items() if value is not None)
    return (
        f"Answer {answer} from model {report.model}: {measured or 'no confidence measured'}{note}; "
        f"finish reason {report.finish_reason}; {len(report.steps)} steps, {len(report.tokens)} generated tokens."
    )


def no_decisions_text(report: Report) -> str:
    """Why a report has no decision points, with the closest call's score when it was measured."""
    threshold = report.options.threshold
    if report.top_decision_score is None:
        return "No token crossed the decision threshold."
    return (
        f"No token crossed the decision threshold ({threshold:.2f}); the closest call scored "
        f"{report.top_decision_score:.2f} (a lower threshold shows it)."
    )


def validation_line(report: Report) -> str:
    validation = report.validation
    if validation is None:
        return "Validation: not run."
    line = (
        f"Validation: {validation.verified} of {validation.total} claims verified by intervention "
        f"(score {validation.score:.2f}, threshold {validation.threshold:.2f})"
    )
    if validation.score_before_refinement is not None:
        line += f"; before refinement {validation.score_before_refinement:.2f}, "
        line += f"{plural(len(validation.removed_claims), 'refuted claim')} removed"
    return line + "."


def _decisions_text(report: Report, depth: str) -> str:
    """Decision points: the uncertain choices and what each alternative led to."""
    points = report.decision_points
    if not points:
        if depth == "novice":
            return "The model never hesitated enough for a choice to matter."
        return no_decisions_text(report)
    intro = {
        "novice": "The model hesitated where a different choice could have mattered.",
        "intermediate": "Decision points (tokens whose decision score crossed the threshold):",
        "expert": "Decision points:",
    }[depth]
    sentences = [_decision_sentence(report, point, depth) for point in points]
    return (" " if depth == "novice" else "\n").join([intro, *sentences])


def _decision_sentence(report: Report, point: DecisionPoint, depth: str) -> str:
    note = claim_note(claim_for(report, "decision", point.step, position=point.position), depth)
    if depth == "novice":
        head = f"{in_step(point.step, depth).capitalize()} it wrote {quote(point.token)}"
        if point.prob < CONFIDENT:
            head += f" but was only about {pct(point.prob)} sure{note}."
        else:  # flagged by the meta-cognitive head, not by the token's own probability
            head += f", about {pct(point.prob)} sure of that word, where its own uncertainty signal said the "
            head += f"reasoning could turn{note}."
    elif depth == "intermediate":
        head = f"- {in_step(point.step, depth).capitalize()} the model chose {quote(point.token)} with "
        head += f"probability {pct(point.prob)}{note}."
    else:
        meta = f", meta_score {num(point.meta_score)}" if point.meta_score is not None else ""
        head = (
            f"- position {point.position} ({step_name(point.step, depth)}) token {quote(point.token)}: "
            f"p {num(point.prob)}, score {num(point.score)}, entropy {num(point.entropy)}, "
            f"margin {num(point.margin)}{meta}{note}."
        )
    alternatives = [_alternative_sentence(report, point, alt, depth) for alt in point.alternatives]
    return " ".join([head, *alternatives])


def _outcome(alt: Alternative) -> str:
    """What forcing an alternative led to, with the alternative's answer."""
    answer = f", {quote(alt.answer)}" if alt.answer is not None else ""
    if alt.outcome == "same_answer":
        return f"the same answer{answer}"
    if alt.outcome == "different_answer":
        return f"a different answer{answer}"
    return "no answer"


def _alternative_sentence(report: Report, point: DecisionPoint, alt: Alternative, depth: str) -> str:
    note = claim_note(
        claim_for(report, "alternative", point.step, position=point.position, token_id=alt.token_id), depth
    )
    if depth == "novice":
        return f"Had it written {quote(alt.token)} instead, it would have reached {_outcome(alt)}{note}."
    if depth == "intermediate":
        return f"The alternative {quote(alt.token)} ({pct(alt.prob)}) led to {_outcome(alt)}{note}."
    return f"Alternative {quote(alt.token)} (id {alt.token_id}, p {num(alt.prob)}) -> {alt.outcome}{note}."


def _steps_text(report: Report, depth: str) -> str:
    """Critical dependencies per step (and each step's numbers above novice)."""
    if depth == "novice":
        return " ".join(filter(None, (_novice_dependency(report, step) for step in report.steps)))
    return "\n\n".join(_step_paragraph(report, step, depth) for step in report.steps)


def _novice_dependency(report: Report, step: Step) -> str:
    if not step.dependencies:
        return ""
    top = step.dependencies[0]
    note = claim_note(claim_for(report, "dependency", step.index, text=top.span.text), "novice")
    where = in_step(step.index, "novice").capitalize()
    return f"{where} it relied most on {quote(top.span.text)} {span_source(top.span, 'novice')}{note}."


def _step_paragraph(report: Report, step: Step, depth: str) -> str:
    """One step: its text, confidence and top dependencies (intermediate or expert)."""
    note = claim_note(claim_for(report, "confidence", step.index, tokens=[step.token_start, step.token_end]), depth)
    answer = " (the answer)" if step.is_answer else ""
    if depth == "intermediate":
        head = f"Step {step.index + 1}{answer}: {quote(step.text)}, confidence {pct(step_confidence(step))}{note}."
    else:
        tokens = f"tokens {step.token_start}-{step.token_end}"
        head = f"Step {step.index + 1}{answer} {quote(step.text)}, {tokens}: {_expert_step_numbers(step)}{note}."
    top = step.dependencies[: TOP_SPANS[depth]]
    if not top:
        return head + " No dependency was measured."
    items = [_dependency_item(report, step, dep, depth) for dep in top]
    if depth == "intermediate":
        return f"{head} It rests most on: {'; '.join(items)}."
    return "\n".join([head, f"Top {len(top)} dependencies (eq. 7):", *items])


def _expert_step_numbers(step: Step) -> str:
    numbers = {
        "confidence": step.confidence,
        "meta_confidence": step.meta_confidence,
        "min prob": step.min_prob,
        "entropy": step.entropy,
    }
    return ", ".join(f"{name} {num(value)}" for name, value in numbers.items() if value is not None)


def _dependency_item(report: Report, step: Step, dep: DependencyScore, depth: str) -> str:
    span = dep.span
    note = claim_note(claim_for(report, "dependency", step.index, text=span.text), depth)
    if depth == "intermediate":
        return f"{quote(span.text)} {span_source(span, depth)} ({pct(dep.share)} of the step's significance){note}"
    return (
        f"- {quote(span.text)} {span_source(span, depth)} [{span.start}:{span.end}], {span.kind}: "
        f"significance {num(dep.significance)}, share {num(dep.share)}, attention {num(dep.attention)}, "
        f"gradient {num(dep.gradient)}{note}"
    )


def _confidence_text(report: Report, depth: str) -> str:
    """Confidence assessment: the least and the most confident steps."""
    if not report.steps:
        return ""
    low = min(report.steps, key=step_confidence)
    high = max(report.steps, key=step_confidence)
    if step_confidence(low) == step_confidence(high):
        every = "its only step" if len(report.steps) == 1 else "every step"
        if depth == "novice":
            return f"It was about {pct(step_confidence(low))} sure of {every}."
        level = pct(step_confidence(low)) if depth == "intermediate" else f"confidence {num(low.confidence)}"
        return f"Confidence assessment: {level} in {every}."
    if depth == "novice":
        return (
            f"It was least sure {in_step(low.index, depth)} (about {pct(step_confidence(low))}) "
            f"and most sure {in_step(high.index, depth)} (about {pct(step_confidence(high))})."
        )
    if depth == "intermediate":
        return (
            f"Confidence assessment: lowest in {step_name(low.index, depth)} ({pct(step_confidence(low))}), "
            f"highest in {step_name(high.index, depth)} ({pct(step_confidence(high))})."
        )
    return (
        f"Confidence assessment: least confident {step_name(low.index, depth)} ({_expert_step_numbers(low)}); "
        f"most confident {step_name(high.index, depth)} ({_expert_step_numbers(high)})."
    )


def _own_explanation_text(report: Report, depth: str) -> str:
    own = report.own_explanation
    if own is None:
        return ""
    text = f"The model's own explanation: {quote(own.text)}"
    if depth == "novice":
        return text
    mean = pct(own.mean_prob) if depth == "intermediate" else num(own.mean_prob)
    return f"{text} (mean token probability {mean})."


def _verification_text(report: Report, depth: str) -> str:
    """How many claims the interventions verified, and what refinement removed."""
    validation = report.validation
    refuted = [claim for claim in report.claims if claim.status == "refuted"]
    if validation is None:
        if not report.claims:
            return ""
        return {
            "novice": "The statements of this explanation were not tested on the model.",
            "intermediate": "The claims were not checked by intervention.",
            "expert": f"Verification: not run; {len(report.claims)} claims unchecked.",
        }[depth]
    if depth == "novice":
        return _novice_verification(validation, bool(refuted))
    removed = validation.removed_claims if validation.score_before_refinement is not None else []
    if depth == "intermediate":
        text = f"{validation.verified} of {validation.total} claims verified by intervention ({pct(validation.score)})."
        if validation.score_before_refinement is not None:
            text += (
                f" The first check scored {pct(validation.score_before_refinement)}, below the "
                f"{pct(validation.threshold)} threshold, so {plural(len(removed), 'refuted claim')} "
                f"{'was' if len(removed) == 1 else 'were'} removed."
            )
        lines = [f"- {quote(claim.statement)}: refuted by intervention and removed." for claim in removed]
        lines += [f"- {quote(claim.statement)}: refuted by intervention, not a fact." for claim in refuted]
        return "\n".join([text, *lines])
    text = (
        f"Verification: {validation.verified} of {validation.total} claims verified by intervention, "
        f"{validation.refuted} refuted; score {num(validation.score)} (threshold {num(validation.threshold)})."
    )
    if validation.score_before_refinement is not None:
        ids = ", ".join(claim.id for claim in removed) or "none"
        text += f" Score before refinement {num(validation.score_before_refinement)}; removed refuted claims: {ids}."
    return text


def _novice_verification(validation: Validation, refuted_left: bool) -> str:
    text = f"These statements were checked by experiments on the model: about {pct(validation.score)} held up."
    if validation.score_before_refinement is not None and validation.removed_claims:
        text += " Statements that failed the experiments were removed."
    if refuted_left:
        text += " Some statements about this answer failed the experiments and should not be trusted."
    return text


def _claims_text(report: Report) -> str:
    """Every claim with its id, status, check and evidence (expert)."""
    removed = report.validation.removed_claims if report.validation else []
    lines = [_claim_line(claim) for claim in report.claims]
    if lines:
        lines.insert(0, "Claims:")
    if removed:
        lines += ["Removed claims (refuted by intervention, not facts):", *map(_claim_line, removed)]
    return "\n".join(lines)


def _claim_line(claim: Claim) -> str:
    status = "REFUTED, not a fact" if claim.status == "refuted" else claim.status
    where = f", {step_name(claim.step, 'expert')}" if claim.step is not None else ""
    line = f"- {claim.id} [{status}] {claim.kind}{where}: {claim.statement}"
    if claim.check:
        line += f" Check: {claim.check}."
    if claim.evidence:
        line += f" Evidence: {pairs(claim.evidence)}."
    return line


def _options_text(report: Report) -> str:
    options = dict(report.options)
    options["calibration"] = report.calibration  # by its method: the curve's points say little here
    return f"Options: {pairs(options)}."
