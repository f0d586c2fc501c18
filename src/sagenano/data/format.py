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


def explain_measurements(step_probs: list[float], share: list[float], decision: list[bool], resamples: int) -> str:
    """A short explanation made only of what was measured on the model."""
    parts = []
    decisive = [k for k, d in enumerate(decision) if d]
    if decisive:
        for k in decisive:
            before, after = round(share[k] * resamples), round(share[k + 1] * resamples)
            parts.append(
                f"Step {k + 1} decided the answer: {before} of {resamples} samples from before it agree, "
                f"{after} of {resamples} after it."
            )
    else:
        parts.append(f"No single step decided the answer: {round(share[0] * resamples)} of {resamples} samples agree.")
    if step_probs:
        weakest = min(range(len(step_probs)), key=step_probs.__getitem__)
        parts.append(f"Least confident step: {weakest + 1} (p={step_probs[weakest]:.2f}).")
    return " ".join(parts)


def explanation_pool(tokenizer) -> list[int]:
    """The ids of two explanations in the stage-3 format (with and without a deciding step): draft text that lookup
    decoding (`sagenano.lookup_decoding`) copies from while a model writes its own explanation."""
    examples = [
        explain_measurements([0.9, 0.95], [1.0, 0.5, 1.0], [True, False], 4),
        explain_measurements([0.9, 0.95], [1.0, 1.0, 1.0], [False, False], 4),
    ]
    return [i for text in examples for i in tokenizer(text, add_special_tokens=False).input_ids]
