"""The report in the terminal (rich): confidence bars, decision points, dependencies and the text."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .highlight import decision_ranges, split_ranges
from .text import no_decisions_text, render_text, validation_line
from .words import answer_confidence, check_depth, num, pct, quote, step_confidence, step_name

if TYPE_CHECKING:  # types only: the report's views import this package
    from ..report import Report, Step


def show(report: Report, depth: str, console: Console | None = None) -> None:
    """Prints the report in the terminal: chain with confidence bars, decision points, dependencies, text."""
    check_depth(depth)
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
    confidence = answer_confidence(report)
    answer = report.answer if report.answer is not None else "(no answer)"
    sure = f"  ({pct(confidence)} confident)" if confidence is not None else ""
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
    for piece, point in split_ranges(step.text, decision_ranges(report, step)):
        text.append(piece, style="bold black on yellow" if point is not None else "")
    return text


def _rich_chain(report: Report) -> Table | Text:
    if not report.steps:
        return Text(f"Chain: {report.chain}")
    grid = Table(title="Reasoning chain", title_justify="left", show_header=False, box=None, padding=(0, 1))
    for step in report.steps:
        confidence = step_confidence(step)
        label = f"Step {step.index + 1}" + (" (answer)" if step.is_answer else "")
        grid.add_row(
            Text(label, style="bold"), _rich_bar(confidence), Text(pct(confidence)), _rich_step_text(report, step)
        )
    return grid


def _rich_decisions(report: Report) -> Table | Text:
    if not report.decision_points:
        return Text(no_decisions_text(report), style="dim")
    headers = ("Step", "Pos", "Token", "P", "Score", "Alternative", "P(alt)", "Outcome", "Alt. answer")
    table = Table(*headers, title="Decision points", title_justify="left")
    for point in report.decision_points:
        step = str(point.step + 1) if point.step is not None else "-"
        first = [step, str(point.position), quote(point.token), pct(point.prob), num(point.score)]
        rows = [[quote(alt.token), pct(alt.prob), alt.outcome, alt.answer or "-"] for alt in point.alternatives]
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
            where = "question" if dep.span.source == "question" else step_name(dep.span.step, "expert")
            cells = (str(step.index + 1), quote(dep.span.text), where, pct(dep.share), num(dep.significance))
            table.add_row(*map(Text, cells))
    return table


def _rich_validation(report: Report) -> Text:
    validation = report.validation
    style = "dim" if validation is None else _confidence_style(validation.score)
    return Text(validation_line(report), style=style)
