"""The report as a self-contained HTML page (or a fragment for Jupyter): chain, decisions, heatmap, claims."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from .highlight import decision_ranges, heat_ranges, split_ranges
from .text import no_decisions_text, render_text, validation_line
from .words import answer_confidence, check_depth, num, pairs, pct, quote, step_confidence

if TYPE_CHECKING:  # types only: the report's views import this package
    from ..report import Alternative, Report, Step

_OUTCOME_LABELS = {"same_answer": "same answer", "different_answer": "different answer", "no_answer": "no answer"}

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
    check_depth(depth)
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
    confidence = answer_confidence(report)
    answer = html.escape(report.answer) if report.answer is not None else "no answer"
    sure = f" ({pct(confidence)} confident)" if confidence is not None else ""
    return (
        "<h2>SAGE-nano explanation</h2>\n"
        f'<p class="note">Model: {html.escape(report.model)}</p>\n'
        f'<h3>Question</h3>\n<p class="question">{html.escape(report.question)}</p>\n'
        f"<p><strong>Answer:</strong> {answer}{sure}</p>\n"
        f"<p><strong>{html.escape(validation_line(report))}</strong></p>"
    )


def _html_step_text(report: Report, step: Step) -> str:
    """The step's text, escaped, with its decision-point tokens highlighted."""
    pieces = []
    for piece, point in split_ranges(step.text, decision_ranges(report, step)):
        if point is None:
            pieces.append(html.escape(piece))
        else:
            title = html.escape(f"decision point: p {num(point.prob)}, score {num(point.score)}")
            pieces.append(f'<strong class="decision" title="{title}">{html.escape(piece)}</strong>')
    return "".join(pieces)


def _html_chain(report: Report) -> str:
    if not report.steps:
        return f'<h3>Reasoning chain</h3>\n<p class="step-text">{html.escape(report.chain)}</p>'
    items = []
    for step in report.steps:
        confidence = step_confidence(step)
        label = f"Step {step.index + 1}" + (" (answer)" if step.is_answer else "")
        width = 100 * min(1.0, max(0.0, confidence))
        items.append(
            f'<li><span class="label">{label}</span>'
            f'<span class="bar" role="img" aria-label="confidence {pct(confidence)}">'
            f'<span class="fill" style="width: {width:.1f}%"></span></span>'
            f'<span class="pct">{pct(confidence)}</span>'
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
        first = [step, html.escape(quote(point.token)), pct(point.prob), num(point.score)]
        for alt in point.alternatives or [None]:
            alt_cells = ["-"] * 4 if alt is None else _html_alternative(alt)
            rows.append(("", first + alt_cells))
    return "<h3>Decision points</h3>\n" + _html_table("Decision points and their alternatives", headers, rows)


def _html_alternative(alt: Alternative) -> list[str]:
    answer = html.escape(alt.answer) if alt.answer is not None else "-"
    return [html.escape(quote(alt.token)), pct(alt.prob), _OUTCOME_LABELS[alt.outcome], answer]


def _html_heatmap(report: Report) -> str:
    """The question with each dependency span coloured by its highest share across steps."""
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
            html.escape(pairs(claim.evidence)),
        ]
        rows.append((claim.status, cells))
    return "<h3>Claims</h3>\n" + _html_table("Claims and how the interventions checked them", headers, rows)


def _html_explanation(report: Report, depth: str) -> str:
    paragraphs = render_text(report, depth).split("\n\n")
    body = "\n".join("<p>" + html.escape(p).replace("\n", "<br>\n") + "</p>" for p in paragraphs)
    return f"<h3>Explanation ({depth})</h3>\n{body}"
