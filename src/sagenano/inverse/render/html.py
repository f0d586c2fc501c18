"""The report as a self-contained HTML page (or a fragment for Jupyter): chain, decisions, heatmap, claims."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from .checks import (
    REFUTED_TITLE,
    alternative_claim,
    check_label,
    decision_claim,
    dependency_claim,
    headline,
    refutation,
    refuted_claims,
    replacement,
    shown_alternatives,
    shown_dependencies,
    tag,
)
from .highlight import decision_ranges, heat_ranges, split_ranges
from .notices import (
    RELIANCE_HEADERS,
    RELIANCE_TITLE,
    familiarity_notice,
    hesitation_line,
    reliance_rows,
    settled_text,
)
from .text import DRAWN_APART, no_decisions_text, text_sections
from .words import (
    answer_confidence,
    answer_scale,
    calibration_note,
    check_depth,
    num,
    pairs,
    pct,
    quote,
    span_where,
    step_confidence,
    step_scale,
    token_prob,
)

if TYPE_CHECKING:  # types only: the report's views import this package
    from ..report import Alternative, Claim, DecisionPoint, Report, Step

_OUTCOME_LABELS = {"same_answer": "same answer", "different_answer": "different answer", "no_answer": "no answer"}

_CSS = """
.sage-report { font-family: system-ui, sans-serif; color: #1a1a1a; background: #ffffff; line-height: 1.5;
  max-width: 60rem; padding: 1rem; }
.sage-report h2, .sage-report h3 { margin: 1.2rem 0 0.4rem; }
.sage-report .question, .sage-report .step-text { white-space: pre-wrap; }
.sage-report .question { font-size: 1.1rem; }
.sage-report .notice { border: 2px solid #b71c1c; background: #fdecea; padding: 0.5rem 0.75rem; margin: 0 0 1rem; }
.sage-report .headline { margin: 0.3rem 0; }
.sage-report mark { color: #1a1a1a; padding: 0 1px; border-radius: 2px; }
.sage-report ol.chain { list-style: none; padding: 0; }
.sage-report ol.chain li { display: grid; grid-template-columns: 9.5rem 8rem 3.5rem 1fr; column-gap: 0.5rem;
  align-items: center; margin: 0.3rem 0; }
.sage-report .label { font-weight: bold; white-space: nowrap; }
.sage-report .bar { display: inline-block; width: 8rem; height: 0.8rem; background: #e0e0e0;
  border: 1px solid #757575; }
.sage-report .fill { display: block; height: 100%; background: #2e7d32; }
.sage-report .pct { text-align: right; }
.sage-report .decision { background: #ffe082; color: #1a1a1a; font-weight: bold; outline: 1px solid #8d6e00; }
.sage-report table { border-collapse: collapse; margin: 0.5rem 0; }
.sage-report caption { text-align: left; font-weight: bold; }
.sage-report th, .sage-report td { border: 1px solid #9e9e9e; padding: 0.2rem 0.5rem; text-align: left;
  vertical-align: top; }
.sage-report th { background: #eeeeee; }
.sage-report .test-held, .sage-report .test-agreed { color: #1b5e20; font-weight: bold; }
.sage-report .test-refuted { color: #b71c1c; font-weight: bold; }
.sage-report .test-untested { color: #545454; }
.sage-report .note { color: #545454; font-size: 0.9rem; }
"""


def render_html(report: Report, depth: str, fragment: bool = False) -> str:
    """A self-contained HTML page (or, with fragment, a <div> for Jupyter) showing the report at a depth."""
    check_depth(depth)
    body = "\n".join(
        part
        for part in [
            _html_notice(report),
            _html_header(report),
            _html_chain(report),
            _html_decisions(report, depth),
            _html_heatmap(report),
            _html_dependencies(report, depth),
            _html_reliance(report) if depth == "expert" else "",
            _html_claims(report, depth),
            _html_refuted(report),
            _html_explanation(report, depth),
        ]
        if part
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


def _html_table(caption: str, headers: tuple[str, ...], rows: list[list[str]]) -> str:
    """A table of already escaped cells with scoped column headers."""
    head = "".join(f'<th scope="col">{html.escape(header)}</th>' for header in headers)
    body = "\n".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>" for cells in rows)
    return (
        f"<table>\n<caption>{html.escape(caption)}</caption>\n<thead><tr>{head}</tr></thead>\n"
        f"<tbody>\n{body}\n</tbody>\n</table>"
    )


def _test_cell(claim: Claim | None) -> str:
    label = check_label(claim)
    return f'<span class="test-{label}">{html.escape(label)}</span>'


def _html_notice(report: Report) -> str:
    notice = familiarity_notice(report)
    return f'<p class="notice" role="note"><strong>Caution:</strong> {html.escape(notice)}</p>' if notice else ""


def _html_header(report: Report) -> str:
    confidence = answer_confidence(report)
    answer = html.escape(report.answer) if report.answer is not None else "no answer"
    sure = f" ({pct(confidence)} confident, {answer_scale(report)})" if confidence is not None else ""
    lines = "\n".join(f'<p class="headline">{html.escape(line)}</p>' for line in headline(report))
    return (
        "<h2>SAGE-nano explanation</h2>\n"
        f'<p class="note">Model: {html.escape(report.model)}</p>\n'
        f'<h3>Question</h3>\n<p class="question">{html.escape(report.question)}</p>\n'
        f"<p><strong>Answer:</strong> {answer}{sure}</p>\n{lines}"
    )


def _html_step_text(report: Report, step: Step) -> str:
    """The step's text, escaped, with its decision-point tokens highlighted."""
    pieces = []
    for piece, point in split_ranges(step.text, decision_ranges(report, step)):
        if point is None:
            pieces.append(html.escape(piece))
        else:
            title = html.escape(f"decision point: p {pct(token_prob(point))}, score {num(point.score)}")
            pieces.append(f'<strong class="decision" title="{title}">{html.escape(piece)}</strong>')
    return "".join(pieces)


def _html_chain(report: Report) -> str:
    if not report.steps:
        return f'<h3>Reasoning chain</h3>\n<p class="step-text">{html.escape(report.chain)}</p>'
    scale = step_scale(report)
    items = []
    for step in report.steps:
        confidence = step_confidence(step)
        label = f"Step {step.index + 1}" + (" (answer)" if step.is_answer else "")
        width = 100 * min(1.0, max(0.0, confidence))
        items.append(
            f'<li><span class="label">{label}</span>'
            f'<span class="bar" role="img" aria-label="{scale} {pct(confidence)}">'
            f'<span class="fill" style="width: {width:.1f}%"></span></span>'
            f'<span class="pct">{pct(confidence)}</span>'
            f'<span class="step-text">{_html_step_text(report, step)}</span></li>'
        )
    note = calibration_note(report)
    note_html = f'<p class="note">{html.escape(note)}</p>\n' if note else ""
    return (
        f'<h3>Reasoning chain</h3>\n<p class="note">Bars: {scale}.</p>\n{note_html}'
        '<ol class="chain">\n' + "\n".join(items) + "\n</ol>"
    )


def _html_decisions(report: Report, depth: str) -> str:
    hesitated = hesitation_line(report, "intermediate")
    hesitated_html = f'\n<p class="note">{html.escape(hesitated)}</p>' if hesitated else ""
    if not report.decision_points:
        return f"<h3>Decision points</h3>\n<p>{html.escape(no_decisions_text(report))}</p>{hesitated_html}"
    headers = ("Step", "Token", "Probability") + (("Score",) if depth == "expert" else ())
    headers += ("Changes the answer", "Alternative", "Alt. probability", "Outcome", "Alt. answer", "Test")
    rows = []
    for point in report.decision_points:
        step = str(point.step + 1) if point.step is not None else "-"
        score = [num(point.score)] if depth == "expert" else []
        first = [step, html.escape(quote(point.token)), pct(token_prob(point)), *score]
        first.append(_test_cell(decision_claim(report, point)))
        for alt in shown_alternatives(report, point) or [None]:
            none = ["all refuted (see below)" if point.alternatives else "none rolled out", *["-"] * 4]
            alt_cells = none if alt is None else _html_alternative(report, point, alt)
            rows.append(first + alt_cells)
    caption = "Decision points (where going another way changes the answer) and their alternatives"
    return "<h3>Decision points</h3>\n" + _html_table(caption, headers, rows) + hesitated_html


def _html_alternative(report: Report, point: DecisionPoint, alt: Alternative) -> list[str]:
    answer = html.escape(alt.answer) if alt.answer is not None else "-"
    test = _test_cell(alternative_claim(report, point, alt))
    return [html.escape(quote(alt.token)), pct(token_prob(alt)), _OUTCOME_LABELS[alt.outcome], answer, test]


def _html_heatmap(report: Report) -> str:
    """The question with each dependency span that was not refuted coloured by its highest share across steps."""
    pieces = []
    for piece, share in split_ranges(report.question, heat_ranges(report)):
        if share is None:
            pieces.append(html.escape(piece))
            continue
        alpha = 0.15 + 0.85 * min(1.0, max(0.0, share))
        title = html.escape(f"highest dependency share: {pct(share)}")
        pieces.append(
            f'<mark style="background: rgba(255, 152, 0, {alpha:.2f})" title="{title}">{html.escape(piece)}</mark>'
        )
    return (
        "<h3>Dependency heatmap</h3>\n"
        '<p class="note">Each part of the question that a step depends on is coloured by its highest share of a '
        "step's eq. 7 significance (hover for the share); spans whose masking test refuted the dependency are left "
        "uncoloured.</p>\n"
        f'<p class="question">{"".join(pieces)}</p>'
    )


def _html_dependencies(report: Report, depth: str) -> str:
    """The top 3 spans per step that were not refuted, with their share (and significance at expert)."""
    headers = ("Step", "Span", "Where", "Share", "Test") + (("Significance",) if depth == "expert" else ())
    rows = []
    for step in report.steps:
        for dep in shown_dependencies(report, step)[:3]:
            claim = dependency_claim(report, step, dep)
            replaced = replacement(report, claim, depth) if claim is not None else ""
            span = html.escape(quote(dep.span.text))
            span += f'<br><span class="note">{html.escape(replaced)}</span>' if replaced else ""
            cells = [str(step.index + 1), span, html.escape(span_where(dep.span)), pct(dep.share), _test_cell(claim)]
            rows.append(cells + ([num(dep.significance)] if depth == "expert" else []))
    if not rows:
        return "<h3>Dependencies</h3>\n<p>No dependency was measured, or none held.</p>"
    caption = "Top 3 dependencies per step (shares of the step's eq. 7 significance; refuted spans left out)"
    return "<h3>Dependencies</h3>\n" + _html_table(caption, headers, rows)


def _html_reliance(report: Report) -> str:
    rows = reliance_rows(report)
    if not rows:
        return ""
    cells = [[html.escape(cell) for cell in row] for row in rows]
    table = _html_table("Early answers, inserted mistakes and filler", RELIANCE_HEADERS, cells)
    return f"<h3>{html.escape(RELIANCE_TITLE)}</h3>\n<p>{html.escape(settled_text(report, 'expert'))}</p>\n{table}"


def _html_claims(report: Report, depth: str) -> str:
    """The claims that stand, each with its check and evidence: the causal ones, and at expert the consistency
    checks too (they state raw numbers)."""
    claims = [c for c in report.claims if c.status != "refuted" and (depth == "expert" or c.category == "causal")]
    claims.sort(key=lambda claim: claim.category != "causal")
    if not claims:
        return "<h3>Claims</h3>\n<p>No claims.</p>"
    headers = ("ID", "Category", "Kind", "Step", "Statement", "Test", "Evidence")
    rows = []
    for claim in claims:
        statement = html.escape(claim.statement)
        if claim.replaces:
            statement += f'<br><span class="note">{html.escape(replacement(report, claim, "expert"))}</span>'
        rows.append(
            [
                html.escape(tag(report, claim)),
                claim.category,
                html.escape(claim.kind),
                str(claim.step + 1) if claim.step is not None else "-",
                statement,
                _test_cell(claim),
                html.escape(pairs(claim.evidence)),
            ]
        )
    caption = "Causal claims (held under intervention: about the model's computation, not the answer's truth)"
    caption += ", then consistency checks (numbers read twice)" if depth == "expert" else ""
    return "<h3>Claims</h3>\n" + _html_table(caption, headers, rows)


def _html_refuted(report: Report) -> str:
    refuted = refuted_claims(report)
    if not refuted:
        return ""
    headers = ("ID", "Category", "Kind", "Step", "Statement", "Why refuted")
    rows = [
        [
            html.escape(tag(report, claim)),
            claim.category,
            html.escape(claim.kind),
            str(claim.step + 1) if claim.step is not None else "-",
            html.escape(claim.statement),
            html.escape(refutation(claim)),
        ]
        for claim in refuted
    ]
    title = html.escape(REFUTED_TITLE)
    return f"<h3>{title}</h3>\n" + _html_table("Claims the interventions refuted: not facts", headers, rows)


def _html_explanation(report: Report, depth: str) -> str:
    """The prose at a depth, less what the page draws apart (the notice, the headline, the refuted claims, and
    at expert the reliance table)."""
    apart = (*DRAWN_APART, "refuted", *(("reliance",) if depth == "expert" else ()))
    paragraphs = [text for name, text in text_sections(report, depth) if name not in apart]
    body = "\n".join("<p>" + html.escape(p).replace("\n", "<br>\n") + "</p>" for p in paragraphs)
    return f"<h3>Explanation ({depth})</h3>\n{body}"
