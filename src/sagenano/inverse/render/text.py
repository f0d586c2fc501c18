"""The explanation in natural language at three depths, and the one-line summaries the other views reuse.

- novice: plain words, short; the only numbers it writes are percentages. Text quoted from the report between
  “ ” (the answer, a span of the question, the model's own explanation) is shown as it is, digits included.
- intermediate: a paragraph per step, with step numbers, percentages and the top 3 dependencies.
- expert: every measured number (raw ones labelled raw), the report's options, and each claim with its check and
  evidence.

Every depth opens with the unfamiliar-question notice when there is one, then the answer and the headline (causal
claims that held, apart from the consistency checks), and lists refuted claims only under "Refuted (not facts)".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import (
    REFUTED_TITLE,
    alternative_claim,
    claim_for,
    claim_label,
    claim_note,
    decision_claim,
    dependency_claim,
    headline,
    hidden_alternatives,
    refuted_claims,
    refuted_lines,
    replacement,
    shown_alternatives,
    shown_dependencies,
    tag,
)
from .notices import familiarity_notice, hesitation_line, reliance_text
from .words import (
    TOP_SPANS,
    answer_confidence,
    answer_scale,
    check_depth,
    count_word,
    in_step,
    num,
    pairs,
    pct,
    quote,
    span_source,
    step_confidence,
    step_name,
    steps_calibrated,
    token_prob,
    tokens_calibrated,
)

if TYPE_CHECKING:  # types only: the report's views import this package
    from ..report import Alternative, Claim, DecisionPoint, DependencyScore, Report, Step

CONFIDENT = 0.9  # a decision point above this token probability was flagged by the meta head
# Sections the terminal and HTML views draw in their own way (a panel, a table) rather than as prose.
DRAWN_APART = ("notice", "headline")


def render_text(report: Report, depth: str) -> str:
    """The explanation in natural language at a depth: novice, intermediate or expert."""
    return "\n\n".join(text for _, text in text_sections(report, depth))


def text_sections(report: Report, depth: str) -> list[tuple[str, str]]:
    """The explanation's sections at a depth, as (name, text), empty ones left out."""
    check_depth(depth)
    sections = [
        ("notice", familiarity_notice(report)),
        ("answer", _answer_text(report, depth)),
        ("headline", ("\n" if depth != "novice" else " ").join(headline(report, depth))),
        ("decisions", _decisions_text(report, depth)),
        ("steps", _steps_text(report, depth)),
        ("confidence", _confidence_text(report, depth)),
        ("reliance", reliance_text(report, depth)),
        ("own_explanation", _own_explanation_text(report, depth)),
        ("refuted", _refuted_text(report, depth)),
    ]
    if depth == "expert":
        sections += [("claims", _claims_text(report)), ("options", _options_text(report))]
    return [(name, text) for name, text in sections if text]


def _answer_text(report: Report, depth: str) -> str:
    """The answer and how confident the model was in it (calibrated where it can be)."""
    confidence = answer_confidence(report)
    if report.answer is None:
        if depth == "novice":
            return "The model did not reach an answer."
        return f"The model gave no answer (finish reason: {report.finish_reason})."
    answer = quote(report.answer)
    raw = answer_scale(report) == "raw"
    if depth == "novice":
        scale = " (by its raw, uncalibrated score)" if raw else ""
        sure = f", and it was about {pct(confidence)} sure{scale}" if confidence is not None else ""
        return f"The model answered {answer}{sure}."
    if depth == "intermediate":
        scale = "raw, uncalibrated" if raw else "calibrated"
        sure = f" with {pct(confidence)} confidence ({scale})" if confidence is not None else ""
        return f"The model's answer is {answer}{sure}, reached in {len(report.steps)} steps."
    numbers = {
        f"calibrated confidence ({report.calibration or 'temperature'})": report.calibrated_answer_confidence,
        "raw answer probability": report.answer_confidence,
        "answer temperature": report.temperature,
        "token temperature": report.token_temperature,
    }
    measured = "; ".join(f"{name} {num(value)}" for name, value in numbers.items() if value is not None)
    return (
        f"Answer {answer} from model {report.model}: {measured or 'no confidence measured'}; "
        f"finish reason {report.finish_reason}; {len(report.steps)} steps, {len(report.tokens)} generated tokens."
    )


def no_decisions_text(report: Report) -> str:
    """Why a report has no decision points, with the closest call's score when it was measured."""
    threshold = report.options.threshold
    if report.hesitations:
        return "No decision point: where the model hesitated, every alternative led to the same answer."
    if report.top_decision_score is None:
        return "No token crossed the decision threshold."
    return (
        f"No token crossed the decision threshold ({threshold:.2f}); the closest call scored "
        f"{report.top_decision_score:.2f} (a lower threshold shows it)."
    )


NOVICE_POINTS = 3  # decision points (and alternatives per point) the novice text describes


def _decisions_text(report: Report, depth: str) -> str:
    """Decision points (only those shown: going another way changes the answer), then one line for hesitations."""
    points = report.decision_points
    hesitated = hesitation_line(report, depth)
    if not points:
        if depth == "novice":
            none = "The model never hesitated where a different choice would have changed the answer."
        else:
            none = no_decisions_text(report)
        return " ".join(filter(None, [none, hesitated]))
    intro = {
        "novice": "The model hesitated where a different choice could have changed the answer.",
        "intermediate": "Decision points (where going another way changes the answer):",
        "expert": "Decision points:",
    }[depth]
    if depth == "novice":
        more = len(points) - NOVICE_POINTS
        sentences = [_decision_sentence(report, point, depth) for point in points[:NOVICE_POINTS]]
        if more > 0:
            sentences.append(f"It hesitated like this at {count_word(more, 'more place')}.")
        return " ".join([intro, *sentences, *filter(None, [hesitated])])
    sentences = [_decision_sentence(report, point, depth) for point in points]
    return "\n".join([intro, *sentences, *filter(None, [hesitated])])


def _decision_note(report: Report, point: DecisionPoint, depth: str) -> str:
    """The decision claim's check: that going another way here changes the answer (held or refuted)."""
    claim = decision_claim(report, point)
    if claim is None or claim.category != "causal" or claim.status != "refuted" or depth == "expert":
        return claim_note(report, claim, depth)
    if depth == "novice":
        return " (but a test did not confirm that this choice changes the answer)"
    return f" (that this choice changes the answer was refuted, see {REFUTED_TITLE})"


def _decision_sentence(report: Report, point: DecisionPoint, depth: str) -> str:
    note = _decision_note(report, point, depth)
    prob = token_prob(point)
    raw = "" if tokens_calibrated(report) else "raw "
    alternatives = shown_alternatives(report, point)
    if depth == "novice":
        head = f"{in_step(point.step, depth).capitalize()} it wrote {quote(point.token)}"
        if prob < CONFIDENT:
            head += f" but was only about {pct(prob)} sure{note}."
        else:  # flagged by the meta-cognitive head, not by the token's own probability
            head += f", about {pct(prob)} sure of that word, where its own uncertainty signal said the "
            head += f"reasoning could turn{note}."
        changing = [alt for alt in alternatives if alt.outcome != "same_answer"][:2]
        return " ".join([head, *(_alternative_sentence(report, point, alt, depth) for alt in changing)])
    if depth == "intermediate":
        head = f"- {in_step(point.step, depth).capitalize()} the model chose {quote(point.token)} with "
        head += f"{raw}probability {pct(prob)}{note}."
    else:
        meta = f", meta_score {num(point.meta_score)}" if point.meta_score is not None else ""
        p = f"p {num(point.calibrated_prob)} (raw {num(point.prob)})" if point.calibrated_prob is not None else ""
        p = p or f"raw p {num(point.prob)}"
        head = (
            f"- position {point.position} ({step_name(point.step, depth)}) token {quote(point.token)}: "
            f"{p}, score {num(point.score)}, entropy {num(point.entropy)}, "
            f"margin {num(point.margin)}{meta}{note}."
        )
    sentences = [_alternative_sentence(report, point, alt, depth) for alt in alternatives]
    hidden = hidden_alternatives(report, point)
    if hidden == 1:
        sentences.append(f"One more alternative's stated outcome was refuted (see {REFUTED_TITLE}).")
    elif hidden:
        sentences.append(f"{hidden} more alternatives' stated outcomes were refuted (see {REFUTED_TITLE}).")
    return " ".join([head, *sentences])


def _outcome(alt: Alternative) -> str:
    """What forcing an alternative led to, with the alternative's answer."""
    answer = f", {quote(alt.answer)}" if alt.answer is not None else ""
    if alt.outcome == "same_answer":
        return f"the same answer{answer}"
    if alt.outcome == "different_answer":
        return f"a different answer{answer}"
    return "no answer"


def _alternative_sentence(report: Report, point: DecisionPoint, alt: Alternative, depth: str) -> str:
    note = claim_note(report, alternative_claim(report, point, alt), depth)
    if depth == "novice":
        return f"Had it written {quote(alt.token)} instead, it would have reached {_outcome(alt)}{note}."
    if depth == "intermediate":
        return f"The alternative {quote(alt.token)} ({pct(token_prob(alt))}) led to {_outcome(alt)}{note}."
    p = f"p {num(alt.calibrated_prob)} (raw {num(alt.prob)})" if alt.calibrated_prob is not None else ""
    p = p or f"raw p {num(alt.prob)}"
    return f"Alternative {quote(alt.token)} (id {alt.token_id}, {p}) -> {alt.outcome}{note}."


def _steps_text(report: Report, depth: str) -> str:
    """Critical dependencies per step (and each step's numbers above novice); refuted spans are left out."""
    if depth == "novice":
        return " ".join(filter(None, (_novice_dependency(report, step) for step in report.steps)))
    return "\n\n".join(_step_paragraph(report, step, depth) for step in report.steps)


def _novice_dependency(report: Report, step: Step) -> str:
    shown = shown_dependencies(report, step)
    if not shown:
        return ""
    top = shown[0]
    claim = dependency_claim(report, step, top)
    note = claim_note(report, claim, "novice")
    replaced = replacement(report, claim, "novice") if claim is not None else ""
    where = in_step(step.index, "novice").capitalize()
    text = f"{where} it relied most on {quote(top.span.text)} {span_source(top.span, 'novice')}{note}"
    return text + (f"; {replaced}." if replaced else ".")


def _step_paragraph(report: Report, step: Step, depth: str) -> str:
    """One step: its text, confidence and top dependencies (intermediate or expert)."""
    answer = " (the answer)" if step.is_answer else ""
    if depth == "intermediate":
        scale = "confidence" if step.calibrated_confidence is not None else "raw token probability"
        head = f"Step {step.index + 1}{answer}: {quote(step.text)}, {scale} {pct(step_confidence(step))}."
    else:
        note = claim_note(report, _confidence_claim(report, step), depth)
        tokens = f"tokens {step.token_start}-{step.token_end}"
        head = f"Step {step.index + 1}{answer} {quote(step.text)}, {tokens}: {_expert_step_numbers(step)}{note}."
    top = shown_dependencies(report, step)[: TOP_SPANS[depth]]
    if not top:
        none = " No dependency was measured." if not step.dependencies else " Every measured dependency was refuted."
        return head + none
    items = [_dependency_item(report, step, dep, depth) for dep in top]
    if depth == "intermediate":
        return f"{head} It rests most on: {'; '.join(items)}."
    title = f"Top {len(top)} dependencies" if len(top) > 1 else "Top dependency"
    return "\n".join([head, f"{title} (eq. 7; refuted spans left out):", *items])


def _confidence_claim(report: Report, step: Step) -> Claim | None:
    return claim_for(report, "confidence", step.index, tokens=[step.token_start, step.token_end])


def _expert_step_numbers(step: Step) -> str:
    numbers = {
        "calibrated confidence": step.calibrated_confidence,
        "raw mean token probability": step.confidence,
        "meta_confidence": step.meta_confidence,
        "raw min prob": step.min_prob,
        "entropy": step.entropy,
    }
    return ", ".join(f"{name} {num(value)}" for name, value in numbers.items() if value is not None)


def _dependency_item(report: Report, step: Step, dep: DependencyScore, depth: str) -> str:
    span = dep.span
    claim = dependency_claim(report, step, dep)
    replaced = replacement(report, claim, depth) if claim is not None else ""
    if depth == "intermediate":
        notes = [f"{pct(dep.share)} of the step's significance", claim_label(report, claim, depth), replaced]
        return f"{quote(span.text)} {span_source(span, depth)} ({'; '.join(filter(None, notes))})"
    text = (
        f"- {quote(span.text)} {span_source(span, depth)} [{span.start}:{span.end}], {span.kind}: "
        f"share {pct(dep.share)}, significance {num(dep.significance)}, attention {num(dep.attention)}, "
        f"gradient {num(dep.gradient)}{claim_note(report, claim, depth)}"
    )
    return text + (f"; {replaced}" if replaced else "")


def _confidence_text(report: Report, depth: str) -> str:
    """Confidence assessment: the least and the most confident steps, on the calibrated scale where there is one
    (else the steps' raw token probabilities, said to be raw)."""
    if not report.steps:
        return ""
    low = min(report.steps, key=step_confidence)
    high = max(report.steps, key=step_confidence)
    if depth == "expert":
        return (
            f"Confidence assessment: least confident {step_name(low.index, depth)} ({_expert_step_numbers(low)}); "
            f"most confident {step_name(high.index, depth)} ({_expert_step_numbers(high)})."
        )
    if not steps_calibrated(report):
        return _raw_confidence_text(report, low, high, depth)
    if step_confidence(low) == step_confidence(high):
        every = "its only step" if len(report.steps) == 1 else "every step"
        if depth == "novice":
            return f"It was about {pct(step_confidence(low))} sure of {every}."
        return f"Confidence assessment: {pct(step_confidence(low))} in {every}."
    if depth == "novice":
        return (
            f"It was least sure {in_step(low.index, depth)} (about {pct(step_confidence(low))}) "
            f"and most sure {in_step(high.index, depth)} (about {pct(step_confidence(high))})."
        )
    return (
        f"Confidence assessment: lowest in {step_name(low.index, depth)} ({pct(step_confidence(low))}), "
        f"highest in {step_name(high.index, depth)} ({pct(step_confidence(high))})."
    )


def _raw_confidence_text(report: Report, low: Step, high: Step, depth: str) -> str:
    """Steps without a calibrated confidence: their raw token probabilities are not shown as confidences."""
    if depth == "novice":
        if report.calibrated_answer_confidence is None:
            return "None of these numbers is calibrated, so treat the percentages as rough."
        return "Only its confidence in the answer is calibrated; how sure it looked within each step is not."
    if report.calibrated_answer_confidence is not None:
        lead = f"only the answer's confidence is calibrated ({pct(report.calibrated_answer_confidence)}); the steps "
        lead += "have none, and their raw token probability"
    else:
        lead = "nothing is calibrated; the steps' raw token probability"
    if step_confidence(low) == step_confidence(high):
        spread = f"is {pct(low.confidence)} in every step"
    else:
        spread = (
            f"is lowest in {step_name(low.index, depth)} ({pct(low.confidence)}) and highest in "
            f"{step_name(high.index, depth)} ({pct(high.confidence)})"
        )
    return f"Confidence assessment: {lead} {spread}; raw probabilities overstate how sure the model is."


def _own_explanation_text(report: Report, depth: str) -> str:
    own = report.own_explanation
    if own is None:
        return ""
    text = f"The model's own explanation: {quote(own.text)}"
    refuted = [c for c in refuted_claims(report) if c.author == "model"]
    checked = refuted + [c for c in report.claims if c.author == "model" and c.status == "verified"]
    if depth == "novice":
        return text + (" A test showed part of it is wrong." if refuted else "")
    mean = pct(own.mean_prob) if depth == "intermediate" else num(own.mean_prob)
    plural = "s" if len(checked) != 1 else ""
    held = f" {len(checked) - len(refuted)} of its {len(checked)} checkable statement{plural} held under intervention"
    failed = f" (the others: see {REFUTED_TITLE})." if refuted else "."
    raw = " Its p values are raw token probabilities, not the calibrated confidences above."
    raw = raw if "(p=" in own.text else ""
    return f"{text} (mean raw token probability {mean}).{held + failed if checked else ''}{raw}"


def _refuted_text(report: Report, depth: str) -> str:
    """Every refuted claim, only here: what it said and why it failed (a count at novice)."""
    refuted = refuted_claims(report)
    if not refuted:
        return ""
    if depth == "novice":
        failed = count_word(len(refuted), "statement").capitalize()
        verb = "was" if len(refuted) == 1 else "were"
        return f"{REFUTED_TITLE}: {failed} {verb} tested on the model, failed, and {verb} left out of this explanation."
    return "\n".join([f"{REFUTED_TITLE}:", *refuted_lines(report, depth)])


def _claims_text(report: Report) -> str:
    """Every claim that stands with its tag, check and evidence (expert): causal claims, then consistency checks."""
    causal = [c for c in report.claims if c.category == "causal" and c.status != "refuted"]
    consistency = [c for c in report.claims if c.category == "consistency" and c.status != "refuted"]
    lines = []
    if causal:
        lines += ["Causal claims:", *(_claim_line(report, claim) for claim in causal)]
    if consistency:
        lines += ["Consistency checks (numbers read twice):", *(_claim_line(report, claim) for claim in consistency)]
    return "\n".join(lines)


def _claim_line(report: Report, claim: Claim) -> str:
    status = {"verified": "held" if claim.category == "causal" else "agreed", "unchecked": "not tested"}
    where = f", {step_name(claim.step, 'expert')}" if claim.step is not None else ""
    line = f"- {tag(report, claim)} [{status.get(claim.status, claim.status)}] {claim.kind}{where}: {claim.statement}"
    if claim.replaces:
        line += f" ({replacement(report, claim, 'expert')})"
    if claim.check:
        line += f" Check: {claim.check}."
    if claim.evidence:
        line += f" Evidence: {pairs(claim.evidence)}."
    return line


def _options_text(report: Report) -> str:
    options = dict(report.options)
    options["calibration"] = report.calibration  # by its method: the curve's points say little here
    return f"Options: {pairs(options)}."
