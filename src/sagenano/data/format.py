"""Render items as training text with the tokenizer's special tokens, and read answers back."""

from __future__ import annotations

import re

from ..tokenizer import SPECIAL_TOKENS
from .schema import ReasoningItem

QUESTION = SPECIAL_TOKENS["question"]
STEP = SPECIAL_TOKENS["step"]
ANSWER = SPECIAL_TOKENS["answer"]
END = SPECIAL_TOKENS["eos"]
EXPLANATION = SPECIAL_TOKENS["explanation"]  # stage 3: the model's own explanation follows it
_SPECIAL_TOKEN = re.compile(r"<\|[a-z]+\|>")


def prompt_text(question: str) -> str:
    """The prompt a model continues: `<|question|>` + question + `<|step|>`."""
    return f"{QUESTION}{question}{STEP}"


def training_text(item: ReasoningItem) -> str:
    """`<|question|>q<|step|>s1<|step|>s2...<|answer|>a<|endoftext|>`: the prompt, the steps, the answer."""
    return f"{prompt_text(item.question)}{STEP.join(item.steps)}{ANSWER}{item.answer}{END}"


def parse_answer(generated: str) -> str | None:
    """The stripped text between the first `<|answer|>` and the next special token (or the end).

    Args:
        generated: Model output, with or without the prompt in front.

    Returns:
        The answer, or None when the text has no `<|answer|>` token.
    """
    start = generated.find(ANSWER)
    if start < 0:
        return None
    rest = generated[start + len(ANSWER) :]
    end = _SPECIAL_TOKEN.search(rest)
    return (rest[: end.start()] if end else rest).strip()


def with_options(stem: str, labels: tuple[str, ...], choices: tuple[str, ...]) -> str:
    """A multiple-choice question as benchmarks are asked: the stem, then one "A) text" line per option."""
    lines = "\n".join(f"{label}) {choice}" for label, choice in zip(labels, choices, strict=True))
    return f"{stem.strip()}\n{lines}"
