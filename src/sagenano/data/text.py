"""Fill sentence templates and join them into a question, recording the character span of every field."""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field

from .schema import Dependency, Span

_FORMATTER = string.Formatter()


def fill(template: str, values: dict[str, object]) -> tuple[str, dict[str, Span]]:
    """Fill the `{field}` placeholders of `template` and return the text with the span of each field.

    A field that occurs twice keeps the span of its last occurrence.
    """
    parts: list[str] = []
    spans: dict[str, Span] = {}
    position = 0
    for literal, name, _spec, _conversion in _FORMATTER.parse(template):
        parts.append(literal)
        position += len(literal)
        if name is not None:
            value = str(values[name])
            spans[name] = Span(position, position + len(value), value)
            parts.append(value)
            position += len(value)
    return "".join(parts), spans


def shift(span: Span, offset: int) -> Span:
    """Move a span `offset` characters to the right."""
    return Span(span.start + offset, span.end + offset, span.text)


@dataclass
class Sentence:
    """One sentence of a question: a template, its values, and (after `join_sentences`) its spans."""

    template: str
    values: dict[str, object]
    spans: dict[str, Span] = field(default_factory=dict)  # field -> span in the whole question
    whole: Span | None = None  # the sentence itself, in the whole question

    def text(self) -> str:
        """The filled sentence."""
        return fill(self.template, self.values)[0]


def join_sentences(sentences: Sequence[Sentence]) -> str:
    """Join sentences with single spaces and store each sentence's spans in question coordinates."""
    texts: list[str] = []
    position = 0
    for sentence in sentences:
        text, spans = fill(sentence.template, sentence.values)
        sentence.spans = {name: shift(span, position) for name, span in spans.items()}
        sentence.whole = Span(position, position + len(text), text)
        texts.append(text)
        position += len(text) + 1
    return " ".join(texts)


def capitalize(word: str) -> str:
    """Upper-case the first letter only ("she" -> "She"; names are unchanged)."""
    return word[:1].upper() + word[1:]


class SolutionWriter:
    """Collects solution steps written from templates, with the dependencies of each step."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.dependencies: list[list[Dependency]] = []

    def add(self, template: str, values: dict[str, object], uses: list[Dependency]) -> dict[str, Dependency]:
        """Append the step `template` filled with `values`, which depends on `uses`.

        Returns:
            For each field of the step, a dependency that points at it (for later steps to use).
        """
        text, spans = fill(template, values)
        index = len(self.steps)
        self.steps.append(text)
        self.dependencies.append(uses)
        return {name: Dependency.in_step(index, span.start, span.text) for name, span in spans.items()}
