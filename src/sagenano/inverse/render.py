"""Views of an explanation report: natural-language text, a rich terminal view and a self-contained HTML page.

Everything rendered comes from the report: measured numbers and the text of the question and chain; no reason
is invented. Steps are numbered from 1 for readers (the step with `index` 0 is "step 1"). Three depths:

- novice: plain words, short; the only numbers it writes are percentages. Text quoted from the report between
  “ ” (the answer, a span of the question, the model's own explanation) is shown as it is, digits included.
- intermediate: a paragraph per step, with step numbers, percentages and the top 3 dependencies.
- expert: every measured number, the report's options, and each claim with its status and evidence.

A claim the interventions refuted is never stated as a fact: where a sentence has a matching claim (same kind
and step, quoting the same token or span) the claim's check is attached to it, and refuted claims are listed as
refuted.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from itertools import groupby
from typing import Any, TypeVar

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .report import DEPTHS, Alternative, Claim, DecisionPoint, DependencyScore, Report, SpanRef, Step, Validation

T = TypeVar("T")

_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
CONFIDENT = 0.9  # a decision point above this token probability was flagged by the meta head
_TOP_DEPENDENCIES = {"novice": 1, "intermediate": 3, "expert": 5}
_STATUS_ORDER = {"refuted": 0, "verified": 1, "unchecked": 2}
_OUTCOME_LABELS = {"same_answer": "same answer", "different_answer": "different answer", "no_answer": "no answer"}


# --- shared helpers ---------------------------------------------------------------------------------


def _check_depth(depth: str) -> None:
    """Raises ValueError unless depth is novice, intermediate or expert."""
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {', '.join(DEPTHS)}; got {depth!r}")


def _pct(p: float) -> str:
    return f"{p:.0%}"


def _num(x: float) -> str:
    return f"{x:.3g}"


def _quote(text: str) -> str:
    """Report text in quotation marks, newlines made visible."""
    return "“" + text.replace("\n", "\\n") + "”"


def _value(value: Any) -> str:
    return _num(value) if isinstance(value, float) else str(value)


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{key}={_value(value)}" for key, value in values.items())


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _step_confidence(step: Step) -> float:
    """The step's confidence: the mean probability of its tokens (calibration applies to the answer only)."""
    return step.confidence


def _answer_confidence(report: Report) -> float | None:
    calibrated = report.calibrated_answer_confidence
    return calibrated if calibrated is not None else report.answer_confidence


def _step_name(index: int | None, depth: str) -> str:
    """'the first step' (novice) or 'step 1'; novice never writes a step number."""
    if index is None:
        return "outside the steps"
    if depth != "novice":
        return f"step {index + 1}"
    return f"the {_ORDINALS[index]} step" if 0 <= index < len(_ORDINALS) else "a later step"


def _in_step(index: int | None, depth: str) -> str:
    return "outside the steps" if index is None else f"in {_step_name(index, depth)}"


def _all_claims(report: Report) -> list[Claim]:
    removed = report.validation.removed_claims if report.validation else []
    return [*report.claims, *removed]


def _claim_for(report: Report, kind: str, step: int | None, **stated: Any) -> Claim | None:
    """The claim about an item: same kind and step, stating the given values (as `claims.make_claims` writes them).

    Refuted claims come first, so that a sentence is never left unmarked when any check refuted it.
    """

    def matches(claim: Claim) -> bool:
        same = claim.kind == kind and claim.step == step
        return same and all(key in claim.stated and claim.stated[key] == value for key, value in stated.items())

    found = sorted(filter(matches, _all_claims(report)), key=lambda claim: _STATUS_ORDER[claim.status])
    return found[0] if found else None


def _note(claim: Claim | None, depth: str) -> str:
    """The check a sentence's claim got, to append to the sentence."""
    if claim is None or (claim.status == "unchecked" and depth != "expert"):
        return ""
    if depth == "novice":
        if claim.status == "verified":
            return " (a test on the model confirmed this)"
        return " (but a test on the model did not confirm this, so do not rely on it)"
    label = {
        "verified": "verified by intervention",
        "refuted": "REFUTED by intervention, not a fact",
        "unchecked": "not checked",
    }[claim.status]
    return f" [{claim.id}: {label}]" if depth == "expert" else f" ({label})"


def _source(span: SpanRef, depth: str) -> str:
    """Where a dependency span is: in the question or in an earlier step."""
    where = "the question" if span.source == "question" else _step_name(span.step, depth)
    return f"from {where}" if depth == "novice" else f"in {where}"


# --- natural-language text ------------------------------------------------------------------------


def render_text(report: Report, depth: str) -> str:
    """The explanation in natural language at a depth: novice, intermediate or expert."""
    _check_depth(depth)
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
    confidence = _answer_confidence(report)
    if report.answer is None:
        if depth == "novice":
            return "The model did not reach an answer."
        return f"The model gave no answer (finish reason: {report.finish_reason})."
    answer = _quote(report.answer)
    answer_step = next((step.index for step in report.steps if step.is_answer), None)
    note = _note(_claim_for(report, "confidence", answer_step, answer=report.answer), depth)
    if depth == "novice":
        sure = f", and it was about {_pct(confidence)} sure{note}" if confidence is not None else ""
        return f"The model answered {answer}{sure}."
    if depth == "intermediate":
        sure = f" with {_pct(confidence)} confidence{note}" if confidence is not None else ""
        return f"The model's answer is {answer}{sure}, reached in {len(report.steps)} steps."
    numbers = {
        "answer confidence": report.answer_confidence,
        f"calibrated ({report.calibration or 'temperature'})": report.calibrated_answer_confidence,
        "temperature": report.temperature,
    }
    measured = "; ".join(f"{name} {_num(value)}" for name, value in numbers.items() if value is not None)
    return (
        f"Answer {answer} from model {report.model}: {measured or 'no confidence measured'}{note}; "
        f"finish reason {report.finish_reason}; {len(report.steps)} steps, {len(report.tokens)} generated tokens."
    )


def no_decisions_text(report: Report) -> str:
    """Why a report has no decision points, with the closest call's score when it was measured."""
    threshold = report.options.get("threshold")
    if report.top_decision_score is None or threshold is None:
        return "No token crossed the decision threshold."
    return (
        f"No token crossed the decision threshold ({threshold:.2f}); the closest call scored "
        f"{report.top_decision_score:.2f} (a lower threshold shows it)."
    )


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
    note = _note(_claim_for(report, "decision", point.step, position=point.position), depth)
    if depth == "novice":
        head = f"{_in_step(point.step, depth).capitalize()} it wrote {_quote(point.token)}"
        if point.prob < CONFIDENT:
            head += f" but was only about {_pct(point.prob)} sure{note}."
        else:  # flagged by the meta-cognitive head, not by the token's own probability
            head += f", about {_pct(point.prob)} sure of that word, where its own uncertainty signal said the "
            head += f"reasoning could turn{note}."
    elif depth == "intermediate":
        head = f"- {_in_step(point.step, depth).capitalize()} the model chose {_quote(point.token)} with "
        head += f"probability {_pct(point.prob)}{note}."
    else:
        meta = f", meta_score {_num(point.meta_score)}" if point.meta_score is not None else ""
        head = (
            f"- position {point.position} ({_step_name(point.step, depth)}) token {_quote(point.token)}: "
            f"p {_num(point.prob)}, score {_num(point.score)}, entropy {_num(point.entropy)}, "
            f"margin {_num(point.margin)}{meta}{note}."
        )
    alternatives = [_alternative_sentence(report, point, alt, depth) for alt in point.alternatives]
    return " ".join([head, *alternatives])


def _outcome(alt: Alternative) -> str:
    """What forcing an alternative led to, with the alternative's answer."""
    answer = f", {_quote(alt.answer)}" if alt.answer is not None else ""
    if alt.outcome == "same_answer":
        return f"the same answer{answer}"
    if alt.outcome == "different_answer":
        return f"a different answer{answer}"
    return "no answer"


def _alternative_sentence(report: Report, point: DecisionPoint, alt: Alternative, depth: str) -> str:
    note = _note(_claim_for(report, "alternative", point.step, position=point.position, token_id=alt.token_id), depth)
    if depth == "novice":
        return f"Had it written {_quote(alt.token)} instead, it would have reached {_outcome(alt)}{note}."
    if depth == "intermediate":
        return f"The alternative {_quote(alt.token)} ({_pct(alt.prob)}) led to {_outcome(alt)}{note}."
    return f"Alternative {_quote(alt.token)} (id {alt.token_id}, p {_num(alt.prob)}) -> {alt.outcome}{note}."


def _steps_text(report: Report, depth: str) -> str:
    """Critical dependencies per step (and each step's numbers above novice)."""
    if depth == "novice":
        return " ".join(filter(None, (_novice_dependency(report, step) for step in report.steps)))
    return "\n\n".join(_step_paragraph(report, step, depth) for step in report.steps)


def _novice_dependency(report: Report, step: Step) -> str:
    if not step.dependencies:
        return ""
    top = step.dependencies[0]
    note = _note(_claim_for(report, "dependency", step.index, text=top.span.text), "novice")
    where = _in_step(step.index, "novice").capitalize()
    return f"{where} it relied most on {_quote(top.span.text)} {_source(top.span, 'novice')}{note}."


def _step_paragraph(report: Report, step: Step, depth: str) -> str:
    """One step: its text, confidence and top dependencies (intermediate or expert)."""
    note = _note(_claim_for(report, "confidence", step.index, tokens=[step.token_start, step.token_end]), depth)
    answer = " (the answer)" if step.is_answer else ""
    if depth == "intermediate":
        head = f"Step {step.index + 1}{answer}: {_quote(step.text)}, confidence {_pct(_step_confidence(step))}{note}."
    else:
        tokens = f"tokens {step.token_start}-{step.token_end}"
        head = f"Step {step.index + 1}{answer} {_quote(step.text)}, {tokens}: {_expert_step_numbers(step)}{note}."
    top = step.dependencies[: _TOP_DEPENDENCIES[depth]]
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
    return ", ".join(f"{name} {_num(value)}" for name, value in numbers.items() if value is not None)


def _dependency_item(report: Report, step: Step, dep: DependencyScore, depth: str) -> str:
    span = dep.span
    note = _note(_claim_for(report, "dependency", step.index, text=span.text), depth)
    if depth == "intermediate":
        return f"{_quote(span.text)} {_source(span, depth)} ({_pct(dep.share)} of the step's significance){note}"
    return (
        f"- {_quote(span.text)} {_source(span, depth)} [{span.start}:{span.end}], {span.kind}: "
        f"significance {_num(dep.significance)}, share {_num(dep.share)}, attention {_num(dep.attention)}, "
        f"gradient {_num(dep.gradient)}{note}"
    )


def _confidence_text(report: Report, depth: str) -> str:
    """Confidence assessment: the least and the most confident steps."""
    if not report.steps:
        return ""
    low = min(report.steps, key=_step_confidence)
    high = max(report.steps, key=_step_confidence)
    if _step_confidence(low) == _step_confidence(high):
        every = "its only step" if len(report.steps) == 1 else "every step"
        if depth == "novice":
            return f"It was about {_pct(_step_confidence(low))} sure of {every}."
        level = _pct(_step_confidence(low)) if depth == "intermediate" else f"confidence {_num(low.confidence)}"
        return f"Confidence assessment: {level} in {every}."
    if depth == "novice":
        return (
            f"It was least sure {_in_step(low.index, depth)} (about {_pct(_step_confidence(low))}) "
            f"and most sure {_in_step(high.index, depth)} (about {_pct(_step_confidence(high))})."
        )
    if depth == "intermediate":
        return (
            f"Confidence assessment: lowest in {_step_name(low.index, depth)} ({_pct(_step_confidence(low))}), "
            f"highest in {_step_name(high.index, depth)} ({_pct(_step_confidence(high))})."
        )
    return (
        f"Confidence assessment: least confident {_step_name(low.index, depth)} ({_expert_step_numbers(low)}); "
        f"most confident {_step_name(high.index, depth)} ({_expert_step_numbers(high)})."
    )


def _own_explanation_text(report: Report, depth: str) -> str:
    own = report.own_explanation
    if own is None:
        return ""
    text = f"The model's own explanation: {_quote(own.text)}"
    if depth == "novice":
        return text
    mean = _pct(own.mean_prob) if depth == "intermediate" else _num(own.mean_prob)
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
        text = (
            f"{validation.verified} of {validation.total} claims verified by intervention ({_pct(validation.score)})."
        )
        if validation.score_before_refinement is not None:
            text += (
                f" The first check scored {_pct(validation.score_before_refinement)}, below the "
                f"{_pct(validation.threshold)} threshold, so {_plural(len(removed), 'refuted claim')} "
                f"{'was' if len(removed) == 1 else 'were'} removed."
            )
        lines = [f"- {_quote(claim.statement)}: refuted by intervention and removed." for claim in removed]
        lines += [f"- {_quote(claim.statement)}: refuted by intervention, not a fact." for claim in refuted]
        return "\n".join([text, *lines])
    text = (
        f"Verification: {validation.verified} of {validation.total} claims verified by intervention, "
        f"{validation.refuted} refuted; score {_num(validation.score)} (threshold {_num(validation.threshold)})."
    )
    if validation.score_before_refinement is not None:
        ids = ", ".join(claim.id for claim in removed) or "none"
        text += f" Score before refinement {_num(validation.score_before_refinement)}; removed refuted claims: {ids}."
    return text


def _novice_verification(validation: Validation, refuted_left: bool) -> str:
    text = f"These statements were checked by experiments on the model: about {_pct(validation.score)} held up."
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
    where = f", {_step_name(claim.step, 'expert')}" if claim.step is not None else ""
    line = f"- {claim.id} [{status}] {claim.kind}{where}: {claim.statement}"
    if claim.check:
        line += f" Check: {claim.check}."
    if claim.evidence:
        line += f" Evidence: {_pairs(claim.evidence)}."
    return line


def _options_text(report: Report) -> str:
    if not report.options:
        return ""
    options = dict(report.options)
    if "calibration" in options:  # by its method: the curve's points say little here
        options["calibration"] = report.calibration
    return f"Options: {_pairs(options)}."


# --- locating text ------------------------------------------------------------------------------------


def _split(text: str, ranges: list[tuple[int, int, T]]) -> Iterator[tuple[str, T | None]]:
    """Cuts text into plain pieces (None) and the pieces of sorted, disjoint ranges (their tag)."""
    position = 0
    for start, end, tag in ranges:
        if start > position:
            yield text[position:start], None
        yield text[start:end], tag
        position = end
    if position < len(text):
        yield text[position:], None


def _locate(text: str, token: str, prefix: str) -> tuple[int, int] | None:
    """Where a token of a step lies in the step's text, given the tokens of the step before it."""
    for guess in (len(prefix), len(prefix.lstrip())):
        if token and text.startswith(token, guess):
            return guess, guess + len(token)
    stripped = token.strip()
    if not stripped:
        return None
    start = text.find(stripped, max(0, len(prefix.lstrip()) - 1))
    start = text.find(stripped) if start < 0 else start
    return (start, start + len(stripped)) if start >= 0 else None


def _decision_ranges(report: Report, step: Step) -> list[tuple[int, int, DecisionPoint]]:
    """Character ranges of the step's decision-point tokens within the step's text."""
    tokens = {record.index: record.token for record in report.tokens}
    ranges: list[tuple[int, int, DecisionPoint]] = []
    for point in report.decision_points:
        if point.step != step.index:
            continue
        prefix = "".join(tokens.get(i, "") for i in range(step.token_start, point.position))
        found = _locate(step.text, point.token, prefix)
        if found and all(found[0] >= end or found[1] <= start for start, end, _ in ranges):
            ranges.append((*found, point))
    return sorted(ranges, key=lambda item: item[0])


def _heat_ranges(report: Report) -> list[tuple[int, int, float]]:
    """Runs of question characters inside dependency spans, each with its highest share over all steps."""
    best: list[float | None] = [None] * len(report.question)
    for step in report.steps:
        for dep in step.dependencies:
            if dep.span.source != "question":
                continue
            for i in range(max(0, dep.span.start), min(len(best), dep.span.end)):
                current = best[i]
                best[i] = dep.share if current is None else max(current, dep.share)
    ranges, position = [], 0
    for share, run in groupby(best):
        length = len(list(run))
        if share is not None:
            ranges.append((position, position + length, share))
        position += length
    return ranges


# --- terminal view ------------------------------------------------------------------------------------


def show(report: Report, depth: str, console: Console | None = None) -> None:
    """Prints the report in the terminal: chain with confidence bars, decision points, dependencies, text."""
    _check_depth(depth)
    console = console or Console()
    console.print(_rich_header(report))
    console.print(_rich_chain(report))
    console.print(_rich_decisions(report))
    console.print(_rich_dependencies(report))
    console.print(_rich_validation(report))
    console.print(Panel(Text(render_text(report, depth)), title=f"Explanation ({depth})", title_align="left"))


def _confidence_style(p: float) -> str:
    return "green" if p >= 0.8 else "yellow" if p >= 0.5 else "red"


def _rich_header(report: Report) -> Panel:
    confidence = _answer_confidence(report)
    answer = report.answer if report.answer is not None else "(no answer)"
    sure = f"  ({_pct(confidence)} confident)" if confidence is not None else ""
    body = Text.assemble(
        ("Question: ", "bold"), report.question, "\n", ("Answer: ", "bold"), answer, sure, "\n", ("Model: ", "bold")
    )
    body.append(report.model, style="dim")
    return Panel(body, title="SAGE-nano explanation", title_align="left")


def _rich_bar(p: float, width: int = 20) -> Text:
    filled = round(min(1.0, max(0.0, p)) * width)
    return Text("█" * filled + "░" * (width - filled), style=_confidence_style(p))


def _rich_step_text(report: Report, step: Step) -> Text:
    """The step's text with its decision-point tokens in bold yellow."""
    text = Text()
    for piece, point in _split(step.text, _decision_ranges(report, step)):
        text.append(piece, style="bold black on yellow" if point is not None else "")
    return text


def _rich_chain(report: Report) -> Table | Text:
    if not report.steps:
        return Text(f"Chain: {report.chain}")
    grid = Table(title="Reasoning chain", title_justify="left", show_header=False, box=None, padding=(0, 1))
    for step in report.steps:
        confidence = _step_confidence(step)
        label = f"Step {step.index + 1}" + (" (answer)" if step.is_answer else "")
        grid.add_row(
            Text(label, style="bold"), _rich_bar(confidence), Text(_pct(confidence)), _rich_step_text(report, step)
        )
    return grid


def _rich_decisions(report: Report) -> Table | Text:
    if not report.decision_points:
        return Text(no_decisions_text(report), style="dim")
    headers = ("Step", "Pos", "Token", "P", "Score", "Alternative", "P(alt)", "Outcome", "Alt. answer")
    table = Table(*headers, title="Decision points", title_justify="left")
    for point in report.decision_points:
        step = str(point.step + 1) if point.step is not None else "-"
        first = [step, str(point.position), _quote(point.token), _pct(point.prob), _num(point.score)]
        rows = [[_quote(alt.token), _pct(alt.prob), alt.outcome, alt.answer or "-"] for alt in point.alternatives]
        for i, row in enumerate(rows or [["-", "-", "-", "-"]]):
            cells = first if i == 0 else [""] * len(first)
            table.add_row(*(Text(cell) for cell in cells + row))
    return table


def _rich_dependencies(report: Report) -> Table | Text:
    if not any(step.dependencies for step in report.steps):
        return Text("No dependency was measured.", style="dim")
    headers = ("Step", "Span", "Where", "Share", "Significance")
    table = Table(*headers, title="Top 3 dependencies per step", title_justify="left")
    for step in report.steps:
        for dep in step.dependencies[:3]:
            where = "question" if dep.span.source == "question" else _step_name(dep.span.step, "expert")
            cells = (str(step.index + 1), _quote(dep.span.text), where, _pct(dep.share), _num(dep.significance))
            table.add_row(*map(Text, cells))
    return table


def _validation_line(report: Report) -> str:
    validation = report.validation
    if validation is None:
        return "Validation: not run."
    line = (
        f"Validation: {validation.verified} of {validation.total} claims verified by intervention "
        f"(score {validation.score:.2f}, threshold {validation.threshold:.2f})"
    )
    if validation.score_before_refinement is not None:
        line += f"; before refinement {validation.score_before_refinement:.2f}, "
        line += f"{_plural(len(validation.removed_claims), 'refuted claim')} removed"
    return line + "."


def _rich_validation(report: Report) -> Text:
    validation = report.validation
    style = "dim" if validation is None else _confidence_style(validation.score)
    return Text(_validation_line(report), style=style)


# --- HTML ---------------------------------------------------------------------------------------------

_CSS = """
.sage-report { font-family: system-ui, sans-serif; color: #1a1a1a; background: #ffffff; line-height: 1.5;
  max-width: 60rem; padding: 1rem; }
.sage-report h2, .sage-report h3 { margin: 1.2rem 0 0.4rem; }
.sage-report .question, .sage-report .step-text { white-space: pre-wrap; }
.sage-report .question { font-size: 1.1rem; }
.sage-report mark { color: #1a1a1a; padding: 0 1px; border-radius: 2px; }
.sage-report ol.chain { list-style: none; padding: 0; }
.sage-report ol.chain li { margin: 0.3rem 0; }
.sage-report .label { display: inline-block; min-width: 7rem; font-weight: bold; }
.sage-report .bar { display: inline-block; width: 8rem; height: 0.8rem; background: #e0e0e0;
  border: 1px solid #757575; vertical-align: middle; }
.sage-report .fill { display: block; height: 100%; background: #2e7d32; }
.sage-report .pct { display: inline-block; min-width: 3rem; text-align: right; margin-right: 0.5rem; }
.sage-report .decision { background: #ffe082; color: #1a1a1a; font-weight: bold; outline: 1px solid #8d6e00; }
.sage-report table { border-collapse: collapse; margin: 0.5rem 0; }
.sage-report caption { text-align: left; font-weight: bold; }
.sage-report th, .sage-report td { border: 1px solid #9e9e9e; padding: 0.2rem 0.5rem; text-align: left;
  vertical-align: top; }
.sage-report th { background: #eeeeee; }
.sage-report .status-verified { color: #1b5e20; font-weight: bold; }
.sage-report .status-refuted { color: #b71c1c; font-weight: bold; }
.sage-report .status-unchecked { color: #545454; }
.sage-report tr.refuted .statement { text-decoration: line-through; }
.sage-report .note { color: #545454; font-size: 0.9rem; }
"""


def render_html(report: Report, depth: str, fragment: bool = False) -> str:
    """A self-contained HTML page (or, with fragment, a <div> for Jupyter) showing the report at a depth."""
    _check_depth(depth)
    body = "\n".join(
        [
            _html_header(report),
            _html_chain(report),
            _html_decisions(report),
            _html_heatmap(report),
            _html_claims(report),
            _html_explanation(report, depth),
        ]
    )
    if fragment:
        return f'<div class="sage-report" lang="en">\n<style>{_CSS}</style>\n{body}\n</div>\n'
    title = html.escape(f"SAGE-nano explanation: {report.question[:80]}")
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<main class="sage-report">\n{body}\n</main>\n</body>\n</html>\n'
    )


def _html_table(caption: str, headers: tuple[str, ...], rows: list[tuple[str, list[str]]]) -> str:
    """A table of (row class, already escaped cells) rows with scoped column headers."""
    head = "".join(f'<th scope="col">{html.escape(header)}</th>' for header in headers)
    body = "\n".join(
        (f'<tr class="{row_class}">' if row_class else "<tr>") + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"
        for row_class, cells in rows
    )
    return (
        f"<table>\n<caption>{html.escape(caption)}</caption>\n<thead><tr>{head}</tr></thead>\n"
        f"<tbody>\n{body}\n</tbody>\n</table>"
    )


def _html_header(report: Report) -> str:
    confidence = _answer_confidence(report)
    answer = html.escape(report.answer) if report.answer is not None else "no answer"
    sure = f" ({_pct(confidence)} confident)" if confidence is not None else ""
    return (
        "<h2>SAGE-nano explanation</h2>\n"
        f'<p class="note">Model: {html.escape(report.model)}</p>\n'
        f'<h3>Question</h3>\n<p class="question">{html.escape(report.question)}</p>\n'
        f"<p><strong>Answer:</strong> {answer}{sure}</p>\n"
        f"<p><strong>{html.escape(_validation_line(report))}</strong></p>"
    )


def _html_step_text(report: Report, step: Step) -> str:
    """The step's text, escaped, with its decision-point tokens highlighted."""
    pieces = []
    for piece, point in _split(step.text, _decision_ranges(report, step)):
        if point is None:
            pieces.append(html.escape(piece))
        else:
            title = html.escape(f"decision point: p {_num(point.prob)}, score {_num(point.score)}")
            pieces.append(f'<strong class="decision" title="{title}">{html.escape(piece)}</strong>')
    return "".join(pieces)


def _html_chain(report: Report) -> str:
    if not report.steps:
        return f'<h3>Reasoning chain</h3>\n<p class="step-text">{html.escape(report.chain)}</p>'
    items = []
    for step in report.steps:
        confidence = _step_confidence(step)
        label = f"Step {step.index + 1}" + (" (answer)" if step.is_answer else "")
        width = 100 * min(1.0, max(0.0, confidence))
        items.append(
            f'<li><span class="label">{label}</span>'
            f'<span class="bar" role="img" aria-label="confidence {_pct(confidence)}">'
            f'<span class="fill" style="width: {width:.1f}%"></span></span>'
            f'<span class="pct">{_pct(confidence)}</span>'
            f'<span class="step-text">{_html_step_text(report, step)}</span></li>'
        )
    return '<h3>Reasoning chain</h3>\n<ol class="chain">\n' + "\n".join(items) + "\n</ol>"


def _html_decisions(report: Report) -> str:
    if not report.decision_points:
        return f"<h3>Decision points</h3>\n<p>{html.escape(no_decisions_text(report))}</p>"
    headers = ("Step", "Token", "Probability", "Score", "Alternative", "Alt. probability", "Outcome", "Alt. answer")
    rows = []
    for point in report.decision_points:
        step = str(point.step + 1) if point.step is not None else "-"
        first = [step, html.escape(_quote(point.token)), _pct(point.prob), _num(point.score)]
        for alt in point.alternatives or [None]:
            alt_cells = ["-"] * 4 if alt is None else _html_alternative(alt)
            rows.append(("", first + alt_cells))
    return "<h3>Decision points</h3>\n" + _html_table("Decision points and their alternatives", headers, rows)


def _html_alternative(alt: Alternative) -> list[str]:
    answer = html.escape(alt.answer) if alt.answer is not None else "-"
    return [html.escape(_quote(alt.token)), _pct(alt.prob), _OUTCOME_LABELS[alt.outcome], answer]


def _html_heatmap(report: Report) -> str:
    """The question with each dependency span coloured by its highest share across steps."""
    pieces = []
    for piece, share in _split(report.question, _heat_ranges(report)):
        if share is None:
            pieces.append(html.escape(piece))
            continue
        alpha = 0.15 + 0.85 * min(1.0, max(0.0, share))
        title = html.escape(f"highest dependency share: {_pct(share)}")
        pieces.append(
            f'<mark style="background: rgba(255, 152, 0, {alpha:.2f})" title="{title}">{html.escape(piece)}</mark>'
        )
    return (
        "<h3>Dependency heatmap</h3>\n"
        '<p class="note">Each part of the question that a step depends on is coloured by its highest share of a '
        "step's eq. 7 significance (hover for the number).</p>\n"
        f'<p class="question">{"".join(pieces)}</p>'
    )


def _html_claims(report: Report) -> str:
    removed = report.validation.removed_claims if report.validation else []
    claims = [(claim, False) for claim in report.claims] + [(claim, True) for claim in removed]
    if not claims:
        return "<h3>Claims</h3>\n<p>No claims.</p>"
    headers = ("ID", "Kind", "Step", "Statement", "Status", "Evidence")
    rows = []
    for claim, was_removed in claims:
        status = claim.status + (" (removed)" if was_removed else "")
        step = str(claim.step + 1) if claim.step is not None else "-"
        cells = [
            html.escape(claim.id),
            html.escape(claim.kind),
            step,
            f'<span class="statement">{html.escape(claim.statement)}</span>',
            f'<span class="status-{claim.status}">{html.escape(status)}</span>',
            html.escape(_pairs(claim.evidence)),
        ]
        rows.append((claim.status, cells))
    return "<h3>Claims</h3>\n" + _html_table("Claims and how the interventions checked them", headers, rows)


def _html_explanation(report: Report, depth: str) -> str:
    paragraphs = render_text(report, depth).split("\n\n")
    body = "\n".join("<p>" + html.escape(p).replace("\n", "<br>\n") + "</p>" for p in paragraphs)
    return f"<h3>Explanation ({depth})</h3>\n{body}"
