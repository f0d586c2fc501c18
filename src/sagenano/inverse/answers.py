"""Answers: reading the answer a chain states, where in the chain it is, how a rollout's answer compares with the
chain's, and how well answer confidences are calibrated (ECE). One home, used by the engine, calibration and
evaluation alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..data.format import ANSWER, parse_answer

if TYPE_CHECKING:
    from ..generation import ReasoningTrace

_ANSWER_IS = re.compile(r"(?i)(?:answer is|answer:|####)\s*\$?\s*([^\s.,;]+(?:[.,]\d+)?)")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def extract_answer(chain: str) -> str | None:
    """The answer a chain states: SAGE's `<|answer|>`, else "answer is X" / `\\boxed{X}` / "#### X", else
    the last number; None when there is none."""
    if ANSWER in chain:
        return parse_answer(chain) or None
    for pattern in (_BOXED, _ANSWER_IS):
        found = pattern.findall(chain)
        if found:
            return found[-1].strip()
    numbers = _NUMBER.findall(chain)
    return numbers[-1] if numbers else None


def outcome(answer: str | None, original: str | None) -> str:
    """How a rollout's answer compares with the chain's: "same_answer", "different_answer" or "no_answer"."""
    if answer is None:
        return "no_answer"
    return "same_answer" if original is not None and answer.strip() == original.strip() else "different_answer"


def changes_answer(answer: str | None, original: str | None) -> bool:
    """Whether a rollout ends somewhere else than the chain: another answer, or none where the chain had one."""
    return (answer or "").strip() != (original or "").strip()


@dataclass
class AnswerSpan:
    """Where a traced chain states its answer."""

    answer: str | None  # `extract_answer` of the chain's text
    tokens: list[int] = field(default_factory=list)  # the generated tokens that spell it
    step: int | None = None  # the step that holds it
    marked: bool = False  # written after SAGE's `<|answer|>` (else found as text, e.g. the last number)


def locate_answer(trace: ReasoningTrace) -> AnswerSpan:
    """The chain's answer, the generated tokens that spell it and the step that holds it. In SAGE's format that is
    the step after `<|answer|>`, up to the next special token (the end-of-sequence token, or a stray `<|step|>`),
    the same text `parse_answer` reads; otherwise the tokens that cover the answer's last occurrence in the text."""
    answer = extract_answer(trace.text)
    if answer is None:
        return AnswerSpan(None)
    if ANSWER in trace.text:
        at = trace.text.index(ANSWER) + len(ANSWER)
        for step in trace.steps:
            if step.char_start >= at:
                return AnswerSpan(answer, list(range(step.token_start, step.token_end)), step.index, marked=True)
    where = trace.text.rfind(answer)
    holder = next((s.index for s in trace.steps if s.char_start <= where < s.char_end), None)
    return AnswerSpan(answer, tokens_covering(trace, answer), holder)


def tokens_covering(trace: ReasoningTrace, text: str) -> list[int]:
    """The generated tokens whose characters overlap the last occurrence of `text` in the chain (none: not in it)."""
    where = trace.text.rfind(text)
    if where < 0:
        return []
    ends = trace.token_char_ends
    starts = [0, *ends[:-1]]
    return [t for t in range(len(ends)) if starts[t] < where + len(text) and ends[t] > where]


def marked_answer_tokens(trace: ReasoningTrace) -> tuple[int, int] | None:
    """Generated-token range [start, end) of the answer written after SAGE's `<|answer|>` (`locate_answer`; None: no
    such answer, or an empty one). What calibration and evaluation score: the answer in the format the model was
    trained to write, its tokens and no others."""
    span = locate_answer(trace)
    if not span.marked or not span.tokens:
        return None
    return span.tokens[0], span.tokens[-1] + 1


def expected_calibration_error(confidences: list[float], correct: list[bool], bins: int = 10) -> float:
    """ECE: Σ_bins (n_bin / n) · |accuracy_bin − mean confidence_bin|, equal-width bins on [0, 1]."""
    total, error = len(confidences), 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(confidences) if low <= c < high or (b == bins - 1 and c == 1.0)]
        if members:
            accuracy = sum(correct[i] for i in members) / len(members)
            confidence = sum(confidences[i] for i in members) / len(members)
            error += len(members) / total * abs(accuracy - confidence)
    return error
