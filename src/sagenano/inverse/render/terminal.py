"""The report in the terminal (rich): confidence bars, decision points, dependencies and the text.

Every table fits 80 columns: short headers that never shrink below their width, cells that wrap or fold (never an
ellipsis), one small table per decision point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .checks import (
    alternative_claim,
    check_label,
    decision_claim,
    dependency_claim,
    hidden_alternatives,
    shown_alternatives,
    shown_dependencies,
)
from .checks import headline as headline_lines
from .highlight import decision_ranges, split_ranges
from .notices import familiarity_notice, hesitation_line
from .text import DRAWN_APART, no_decisions_text, text_sections
from .words import (
    answer_confidence,
    answer_scale,
    calibration_note,
    check_depth,
    num,
    pct,
    quote,
    span_where,
    step_confidence,
    step_scale,
    token_prob,
)

if TYPE_CHECKING:  # types only: the report's views import this package
    from ..report import DecisionPoint, Report, Step

_OUTCOMES = {"same_answer": "same", "different_answer": "different", "no_answer": "none"}
_TEST_STYLES = {"held": "green", "agreed": "green", "refuted": "bold red", "untested": "dim"}


def show(report: Report, depth: str, console: Console | None = None) -> None:
    """Prints the report in the terminal: chain with confidence bars, decision points, dependencies, text."""
    check_depth(depth)
    console = console or Console()
    notice = familiarity_notice(report)
    if notice:
        console.print(Panel(Text(notice), title="Caution: unfamiliar question", title_align="left", border_style="red"))
    console.print(_rich_header(report))
    console.print(_rich_headline(report))
    console.print(_rich_chain(report))
    console.print(_rich_decisions(report, depth))
    console.print(_rich_dependencies(report, depth))
    prose = "\n\n".join(text for name, text in text_sections(report, depth) if name not in DRAWN_APART)
    console.print(Panel(Text(prose), title=f"Explanation ({depth})", title_align="left"))


def _confidence_style(p: float) -> str:
    return "green" if p >= 0.8 else "yellow" if p >= 0.5 else "red"


def _table(*headers: str, title: str) -> Table:
    """A table whose headers never shrink below their width and whose cells fold rather than cut."""
    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header, min_width=len(header), overflow="fold")
    return table


def _test(label: str) -> Text:
    return Text(label, style=_TEST_STYLES.get(label, ""))


def _rich_header(report: Report) -> Panel:
    confidence = answer_confidence(report)
    answer = report.answer if report.answer is not None else "(no answer)"
    sure = f"  ({pct(confidence)} confident, {answer_scale(report)})" if confidence is not None else ""
    body = Text.assemble(
        ("Question: ", "bold"), report.question, "\n", ("Answer: ", "bold"), answer, sure, "\n", ("Model: ", "bold")
    )
    body.append(report.model, style="dim")
    return Panel(body, title="SAGE-nano explanation", title_align="left")


def _rich_headline(report: Report) -> Text:
    """Causal claims that held (coloured by the share), then the consistency checks and refinement (dim)."""
    lines = headline_lines(report)
    validation = report.validation
    text = Text(lines[0], style="dim" if validation is None else _confidence_style(validation.score))
    for line in lines[1:]:
        text.append("\n" + line, style="dim")
    return text


def _rich_bar(p: float, width: int = 12) -> Text:
    filled = round(min(1.0, max(0.0, p)) * width)
    return Text("█" * filled + "░" * (width - filled), style=_confidence_style(p))


def _rich_step_text(report: Report, step: Step) -> Text:
    """The step's text with its decision-point tokens in bold yellow."""
    text = Text()
    for piece, point in split_ranges(step.text, decision_ranges(report, step)):
        text.append(piece, style="bold black on yellow" if point is not None else "")
    return text


def _rich_chain(report: Report) -> Group | Text:
    if not report.steps:
        return Text(f"Chain: {report.chain}")
    grid = Table(
        title=f"Reasoning chain (bars: {step_scale(report)})",
        title_justify="left",
        show_header=False,
        box=None,
        padding=(0, 1),
    )
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True, justify="right")
    grid.add_column(overflow="fold")
    for step in report.steps:
        confidence = step_confidence(step)
        label = f"Step {step.index + 1}" + (" (answer)" if step.is_answer else "")
        grid.add_row(
            Text(label, style="bold"), _rich_bar(confidence), Text(pct(confidence)), _rich_step_text(report, step)
        )
    note = calibration_note(report)
    return Group(grid, Text(note, style="dim")) if note else grid


def _rich_decisions(report: Report, depth: str) -> Group | Text:
    """One small table per decision point: its alternatives, where each leads, and each claim's check."""
    hesitated = hesitation_line(report, "intermediate")
    if not report.decision_points:
        return Text(" ".join(filter(None, [no_decisions_text(report), hesitated])), style="dim")
    parts: list = [Text("Decision points (where going another way changes the answer)", style="bold italic")]
    parts += [_rich_decision(report, point, depth) for point in report.decision_points]
    if hesitated:
        parts.append(Text(hesitated, style="dim"))
    return Group(*parts)


def _rich_decision(report: Report, point: DecisionPoint, depth: str) -> Table | Text:
    where = f"step {point.step + 1}" if point.step is not None else "outside the steps"
    score = f", score {num(point.score)}, position {point.position}" if depth == "expert" else ""
    verdict = check_label(decision_claim(report, point))
    title = f"{where}: {quote(point.token)} at {pct(token_prob(point))}{score}; changes the answer: {verdict}"
    hidden = hidden_alternatives(report, point)
    refuted = f"{hidden} alternative{'s' if hidden > 1 else ''} refuted (listed under Refuted)" if hidden else ""
    shown = shown_alternatives(report, point)
    if not shown:
        return Text(f"{title}. {refuted or 'No alternative was rolled out.'}")
    table = _table("Alternative", "P", "Leads to", "Answer", "Test", title=title)
    for alt in shown:
        test = check_label(alternative_claim(report, point, alt))
        cells = (quote(alt.token), pct(token_prob(alt)), _OUTCOMES[alt.outcome], alt.answer or "-")
        table.add_row(*map(Text, cells), _test(test))
    if hidden:
        table.caption, table.caption_justify = f"and {hidden} refuted (see Refuted)", "left"
    return table


def _rich_dependencies(report: Report, depth: str) -> Table | Text:
    """The top 3 spans per step that were not refuted, as shares of the step's significance (and, at expert, the
    eq. 7 significance to 3 significant digits)."""
    rows = [(step, dep) for step in report.steps for dep in shown_dependencies(report, step)[:3]]
    if not rows:
        return Text("No dependency was measured, or none held.", style="dim")
    headers = ("Step", "Span", "Where", "Share", "Test") + (("Signif.",) if depth == "expert" else ())
    table = _table(*headers, title="Top 3 dependencies per step (refuted spans left out)")
    for step, dep in rows:
        cells = [str(step.index + 1), quote(dep.span.text), span_where(dep.span), pct(dep.share)]
        test = _test(check_label(dependency_claim(report, step, dep)))
        extra = [Text(num(dep.significance))] if depth == "expert" else []
        table.add_row(*map(Text, cells), test, *extra)
    return table
