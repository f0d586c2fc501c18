"""Where decision-point tokens and dependency spans lie in the text, for the views that highlight them."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby
from typing import TYPE_CHECKING, TypeVar

from .checks import shown_dependencies

if TYPE_CHECKING:  # types only: the report's views import this package
    from ..report import DecisionPoint, Report, Step


T = TypeVar("T")


def split_ranges(text: str, ranges: list[tuple[int, int, T]]) -> Iterator[tuple[str, T | None]]:
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


def decision_ranges(report: Report, step: Step) -> list[tuple[int, int, DecisionPoint]]:
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


def heat_ranges(report: Report) -> list[tuple[int, int, float]]:
    """Runs of question characters inside dependency spans that were not refuted, each with its highest share over
    all steps."""
    best: list[float | None] = [None] * len(report.question)
    for step in report.steps:
        for dep in shown_dependencies(report, step):
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
