"""The reasoning-item schema shared by every synthetic task: question, steps, answer and their spans."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Split = Literal["train", "heldout"]
SPLITS: tuple[str, ...] = ("train", "heldout")
SOURCES: tuple[str, ...] = ("question", "step")


def validate_split(split: str) -> str:
    """Return `split` unchanged, or raise a ValueError naming the valid splits."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)}.")
    return split


@dataclass(frozen=True)
class Span:
    """A character span `[start, end)` of the question; `text` is exactly `question[start:end]`."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Dependency:
    """A span that a step depends on, in the question or in an earlier step's text."""

    source: Literal["question", "step"]
    step: int | None  # index of the earlier step when source == "step", else None
    start: int
    end: int
    text: str

    @classmethod
    def in_question(cls, span: Span) -> Dependency:
        """Depend on a span of the question."""
        return cls("question", None, span.start, span.end, span.text)

    @classmethod
    def in_step(cls, step: int, start: int, text: str) -> Dependency:
        """Depend on `text`, found at `start` in the text of earlier step `step`."""
        return cls("step", step, start, start + len(text), text)


@dataclass(frozen=True)
class ReasoningItem:
    """One task item with its ground truth: solution steps, answer, step dependencies and distractors."""

    id: str
    task: str
    split: str
    question: str
    steps: list[str]
    answer: str
    dependencies: list[list[Dependency]]  # one list per step
    distractors: list[Span] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the item as plain JSON-ready data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReasoningItem:
        """Build an item from `to_dict()` output.

        Args:
            data: A mapping with the keys of `ReasoningItem`.

        Returns:
            The item.

        Raises:
            ValueError: If a key is missing or a span is malformed.
        """
        missing = [name for name in ("id", "task", "split", "question", "steps", "answer") if name not in data]
        if missing:
            raise ValueError(f"Reasoning item is missing the field(s) {', '.join(missing)}.")
        try:
            dependencies = [[Dependency(**span) for span in spans] for spans in data.get("dependencies", [])]
            distractors = [Span(**span) for span in data.get("distractors", [])]
        except TypeError as error:
            raise ValueError(f"Reasoning item {data['id']!r} has a malformed span: {error}.") from error
        return cls(
            id=data["id"],
            task=data["task"],
            split=data["split"],
            question=data["question"],
            steps=list(data["steps"]),
            answer=data["answer"],
            dependencies=dependencies,
            distractors=distractors,
            meta=dict(data.get("meta", {})),
        )
