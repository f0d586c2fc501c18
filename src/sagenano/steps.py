"""Cutting a generated chain into reasoning steps (SAGE's `<|step|>` tokens, "Step k:" markers, lines or sentences)
and mapping each step to the generated tokens that cover it."""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass

from .data.format import ANSWER, END, EXPLANATION, STEP


@dataclass
class StepSpan:
    """One reasoning step: generated tokens [token_start, token_end) and characters [char_start, char_end)."""

    index: int
    text: str
    token_start: int
    token_end: int
    char_start: int
    char_end: int


_STEP_MARKER = re.compile(r"(?i)\bstep\s*\d+\s*[:.)]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _spans_lines(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for line in text.split("\n"):
        if line.strip():
            spans.append((start, start + len(line)))
        start += len(line) + 1
    return spans


def _spans_sentences(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _spans_markers(text: str) -> list[tuple[int, int]]:
    starts = [m.start() for m in _STEP_MARKER.finditer(text)]
    if not starts:
        return [(0, len(text))] if text.strip() else []
    bounds = [*starts, len(text)]
    spans = [(a, b) for a, b in itertools.pairwise(bounds)]
    if text[: starts[0]].strip():
        spans.insert(0, (0, starts[0]))
    return [(a, len(text[a:b].rstrip()) + a) for a, b in spans]


_STEP_TOKEN = re.compile("|".join(re.escape(token) for token in (STEP, ANSWER, END, EXPLANATION)))


def _spans_step_tokens(text: str) -> list[tuple[int, int]]:
    """SAGE's own format: steps between `<|step|>` tokens, the answer after `<|answer|>` as the last one."""
    spans, start = [], 0
    for match in _STEP_TOKEN.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
        if match.group() in (END, EXPLANATION):
            break
    else:
        spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


STEP_STRATEGIES: dict[str, Callable[[str], list[tuple[int, int]]]] = {
    "tokens": _spans_step_tokens,
    "lines": _spans_lines,
    "sentences": _spans_sentences,
    "markers": _spans_markers,
}


def choose_step_strategy(text: str) -> str:
    """`auto`: SAGE's step tokens, else "Step k:" markers, else lines if there are several, else sentences."""
    if STEP in text or ANSWER in text:
        return "tokens"
    if _STEP_MARKER.search(text):
        return "markers"
    if len(_spans_lines(text)) > 1:
        return "lines"
    return "sentences"


def segment_steps(text: str, token_char_ends: list[int], strategy: str = "auto") -> list[StepSpan]:
    """Cuts generated text into steps and maps each to the generated tokens it covers.

    A token belongs to the step its last character falls in; a step that no token ends in still gets
    the token that covers its last character.
    """
    if strategy == "auto":
        strategy = choose_step_strategy(text)
    if strategy not in STEP_STRATEGIES:
        raise ValueError(f"unknown step strategy {strategy!r}; choose one of {['auto', *STEP_STRATEGIES]}")
    steps = []
    for index, (a, b) in enumerate(STEP_STRATEGIES[strategy](text)):
        first = bisect.bisect_right(token_char_ends, a)  # first token ending after char a
        last = bisect.bisect_left(token_char_ends, b)  # token covering char b - 1
        last = min(last, len(token_char_ends) - 1)
        steps.append(StepSpan(index, text[a:b], first, max(first, last) + 1, a, b))
    return steps
