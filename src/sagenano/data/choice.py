"""AQUA-RAT-like five-option multiple choice built on an arithmetic or linear-equation item."""

from __future__ import annotations

import random
import re

from .arithmetic import generate_arithmetic
from .linear import generate_linear_equation
from .schema import Dependency, ReasoningItem, validate_split
from .text import SolutionWriter, fill, shift

LETTERS: tuple[str, ...] = ("A", "B", "C", "D", "E")
BASE_TASKS: tuple[str, ...] = ("arithmetic", "linear_equation")
OPTIONS_TEMPLATE = "Options: " + " ".join(f"{{{letter}}}" for letter in LETTERS)  # "Options: {A} {B} {C} {D} {E}"
FINAL_STEP = "The answer is {value}, which is option {letter}."
# The "walk" last step (the default): the options in order up to the one that holds the solved value, each judged,
# then its letter. Naming the letter at once ("name") needs a look back from the value to the letter before it
# ("A) 22"), which the pico did not learn; the walk copies each option forward and judges it, which it did
# (docs/reasoning_data.md: measured beside "name" at the same budget on development items).
WALK_START = "Compare {value} with the options: "
WALK_END = ". The answer is {value}, which is option {letter}."
FINAL_STEPS: tuple[str, ...] = ("walk", "name")
_STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)$")
_SLIPS = {"+": ("-", "*"), "-": ("+",), "*": ("+",), "/": ("*", "-")}


def _result(step: str) -> int | None:
    """The number that ends a solution step, if it ends in one."""
    match = re.search(r"= (\d+)$", step)
    return int(match.group(1)) if match else None


def plausible_wrong_values(steps: list[str], answer: int, rng: random.Random) -> list[int]:
    """Four distinct non-negative wrong answers: up to two slips (an intermediate result, the last
    operation done wrong), then near misses."""
    slips = [value for value in map(_result, steps[:-1]) if value is not None]
    last = _STEP.search(steps[-1])
    if last:
        left, right = int(last.group(1)), int(last.group(3))
        slips += [_apply(slip, left, right) for slip in _SLIPS[last.group(2)]]
    slips = [value for value in slips if value is not None and value <= max(2 * answer, answer + 50)]
    rng.shuffle(slips)
    near = [answer + delta for delta in (-10, -2, -1, 1, 2, 10)] + [answer * 2]
    rng.shuffle(near)
    wrong: list[int] = []
    for value, limit in [*((v, 2) for v in slips), *((v, 4) for v in near)]:
        if len(wrong) < limit and value >= 0 and value != answer and value not in wrong:
            wrong.append(value)
    while len(wrong) < 4:
        value = answer + rng.choice([delta for delta in range(-12, 13) if delta])
        if value >= 0 and value != answer and value not in wrong:
            wrong.append(value)
    return wrong


def _apply(operation: str, left: int, right: int) -> int | None:
    # Kept apart from checker.evaluate on purpose: the checker must not share code with the generators.
    if operation == "+":
        return left + right
    if operation == "-":
        return left - right
    if operation == "*":
        return left * right
    return left // right if right and left % right == 0 else None


def generate_multiple_choice(
    rng: random.Random, split: str = "train", base: str | None = None, final_step: str = "walk"
) -> ReasoningItem:
    """Generate one five-option (A–E) question on top of an arithmetic or linear-equation item.

    The options follow the base question ("... Options: A) 15 B) 12 C) 9 D) 20 E) 18"); exactly one is
    right and the correct letter is uniform over A–E. The steps are the base solution plus a last step that
    walks the options up to the right one, "Compare 12 with the options: A) 15 no, B) 12 yes. The answer is
    12, which is option B." (or, with `final_step="name"`, "The answer is 12, which is option B."); the answer
    is the letter. The options the last step does not
    read are marked as distractors.

    Args:
        rng: The source of randomness; the item is a pure function of its state.
        split: "train" or "heldout" (the base question follows that split's rules; options follow none).
        base: "arithmetic" or "linear_equation"; random when None.
        final_step: "walk" (the options walked up to the value) or "name" (its letter, named at once).

    Returns:
        The item; its `meta` holds base_task, the base item's meta, options (letter -> value) and num_steps.

    Raises:
        ValueError: If the split or the base task is unknown.
    """
    validate_split(split)
    if base is not None and base not in BASE_TASKS:
        raise ValueError(f"Unknown base task {base!r}: use one of {', '.join(BASE_TASKS)}.")
    if final_step not in FINAL_STEPS:
        raise ValueError(f"Unknown final step {final_step!r}: use one of {', '.join(FINAL_STEPS)}.")
    base = base or rng.choice(BASE_TASKS)
    item = generate_arithmetic(rng, split) if base == "arithmetic" else generate_linear_equation(rng, split)
    value = int(item.answer)
    values = plausible_wrong_values(item.steps, value, rng)
    correct = rng.randrange(len(LETTERS))
    values.insert(correct, value)
    options = {letter: f"{letter}) {option}" for letter, option in zip(LETTERS, values, strict=True)}
    text, spans = fill(OPTIONS_TEMPLATE, options)
    question = f"{item.question} {text}"
    option_spans = {k: shift(span, len(item.question) + 1) for k, span in spans.items()}
    letter = LETTERS[correct]
    writer = SolutionWriter()
    writer.steps, writer.dependencies = list(item.steps), list(item.dependencies)
    last = len(item.steps) - 1
    result = Dependency.in_step(last, len(item.steps[last]) - len(item.answer), item.answer)
    read = LETTERS[: correct + 1] if final_step == "walk" else (letter,)  # the walk stops at the right one
    verdicts = ", ".join(f"{{{key}}} {'yes' if key == letter else 'no'}" for key in read)
    template = WALK_START + verdicts + WALK_END if final_step == "walk" else FINAL_STEP
    fields = {"value": value, "letter": letter, **{key: options[key] for key in read}}
    writer.add(template, fields, [result, *(Dependency.in_question(option_spans[key]) for key in read)])
    unread = [span for k, span in option_spans.items() if k not in read]
    return ReasoningItem(
        id="",
        task="multiple_choice",
        split=split,
        question=question,
        steps=writer.steps,
        answer=letter,
        dependencies=writer.dependencies,
        distractors=sorted([*item.distractors, *unread], key=lambda span: span.start),
        meta={
            "base_task": base,
            "base_meta": item.meta,
            "options": dict(zip(LETTERS, map(str, values), strict=True)),
            "final_step": final_step,
            "num_steps": len(writer.steps),
        },
    )
