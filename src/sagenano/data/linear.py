"""Linear equations with one unknown and a positive integer solution, solved in 2–3 exact steps."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from .schema import Dependency, ReasoningItem, validate_split
from .text import Sentence, SolutionWriter, join_sentences
from .vocab import allowed_quantities, quantity_allowed

FORMS: tuple[str, ...] = ("add", "sub", "both", "paren_add", "paren_sub")
EQUATIONS: dict[str, str] = {
    "add": "{a}{v} + {b} = {c}",
    "sub": "{a}{v} - {b} = {c}",
    "both": "{a}{v} + {b} = {c}{v} + {d}",
    "paren_add": "{a}({v} + {b}) = {c}",
    "paren_sub": "{a}({v} - {b}) = {c}",
}
PHRASINGS: tuple[str, ...] = (
    "Solve for {v}: {eq}.",
    "If {eq}, what is {v}?",
    "Find {v} if {eq}.",
    "What is the value of {v} when {eq}?",
    "Given {eq}, find {v}.",
    "{eq}. What is {v}?",
)
VARIABLES: tuple[str, ...] = ("x", "x", "x", "y", "z", "n")
MAX_SOLUTION = 20
MAX_GIVEN = 999
_TRIES = 200


@dataclass(frozen=True)
class Equation:
    """The givens of one equation of form `form` and its solution `x`."""

    form: str
    givens: dict[str, int]
    x: int


def _sample(rng: random.Random, split: str, build: Callable[[int], dict[str, int] | None]) -> tuple[dict, int]:
    """Draw solutions until `build(x)` returns givens that `split` may state; return them and x."""
    for _ in range(_TRIES):
        x = rng.randint(1, MAX_SOLUTION)
        givens = build(x)
        if givens is not None and all(0 < v <= MAX_GIVEN and quantity_allowed(v, split) for v in givens.values()):
            return givens, x
    raise AssertionError("no equation found; the ranges must leave one")


def sample_equation(rng: random.Random, split: str, form: str) -> Equation:
    """Draw the givens of an equation of `form` whose solution is a positive integer.

    Some coefficients leave no allowed givens (in held-out, an even `a` makes `a(x + b)` even, never
    ending in 3 or 7), so the coefficient is drawn again until one does.
    """
    for _ in range(_TRIES):
        try:
            return _sample_with_coefficient(rng, split, form)
        except AssertionError:
            continue
    raise AssertionError(f"no {form} equation found for split {split}; the ranges must leave one")


def _sample_with_coefficient(rng: random.Random, split: str, form: str) -> Equation:
    coefficients = allowed_quantities(2, 13, split)
    constants = allowed_quantities(1, 60, split)
    a = rng.choice(coefficients)
    if form == "add":
        givens, x = _sample(rng, split, lambda x: {"a": a, "b": (b := rng.choice(constants)), "c": a * x + b})
    elif form == "sub":
        givens, x = _sample(rng, split, lambda x: {"a": a, "b": (b := rng.choice(constants)), "c": a * x - b})
    elif form == "paren_add":
        givens, x = _sample(rng, split, lambda x: {"a": a, "b": (b := rng.choice(constants)), "c": a * (x + b)})
    elif form == "paren_sub":
        givens, x = _sample(rng, split, lambda x: {"a": a, "b": (b := rng.choice(constants)), "c": a * (x - b)})
    else:
        c = rng.choice([k for k in coefficients if k != a])
        givens, x = _sample(rng, split, lambda x: _both_sides(a, c, rng.choice(constants), x))
    return Equation(form, givens, x)


def _both_sides(a: int, c: int, smaller: int, x: int) -> dict[str, int]:
    """Givens of `a·x + b = c·x + d`: the side with the larger coefficient gets the smaller constant."""
    larger = abs(a - c) * x + smaller
    return {"a": a, "b": smaller, "c": c, "d": larger} if a > c else {"a": a, "b": larger, "c": c, "d": smaller}


def solve_one_side(eq: Equation, given: dict[str, Dependency], v: str, writer: SolutionWriter) -> None:
    """Steps for `a·v ± b = c`: move the constant, then divide."""
    a, b, c = eq.givens["a"], eq.givens["b"], eq.givens["c"]
    op, value = ("-", c - b) if eq.form == "add" else ("+", c + b)
    moved = writer.add(
        "{a}{v} = {c} " + op + " {b} = {r}", {"a": a, "v": v, "c": c, "b": b, "r": value}, [given[k] for k in "acb"]
    )
    writer.add("{v} = {r} / {a} = {x}", {"v": v, "r": value, "a": a, "x": eq.x}, [moved["r"], given["a"]])


def solve_parentheses(eq: Equation, given: dict[str, Dependency], v: str, writer: SolutionWriter) -> None:
    """Steps for `a(v ± b) = c`: divide, then move the constant."""
    a, b, c = eq.givens["a"], eq.givens["b"], eq.givens["c"]
    sign, undo = ("+", "-") if eq.form == "paren_add" else ("-", "+")
    inner = c // a
    divided = writer.add(
        "{v} " + sign + " {b} = {c} / {a} = {q}",
        {"v": v, "b": b, "c": c, "a": a, "q": inner},
        [given[k] for k in "bca"],
    )
    writer.add("{v} = {q} " + undo + " {b} = {x}", {"v": v, "q": inner, "b": b, "x": eq.x}, [divided["q"], given["b"]])


def solve_both_sides(eq: Equation, given: dict[str, Dependency], v: str, writer: SolutionWriter) -> None:
    """Steps for `a·v + b = c·v + d`: collect the unknown, move the constants, divide (unless the coefficient is 1)."""
    a, b, c, d = (eq.givens[k] for k in "abcd")
    big, small, high, low = ("a", "c", "d", "b") if a > c else ("c", "a", "b", "d")
    k = abs(a - c)
    term = "{k}{v}" if k > 1 else "{v}"
    values = {"big": eq.givens[big], "small": eq.givens[small], "k": k, "v": v}
    collected = writer.add("{big}{v} - {small}{v} = " + term, values, [given[big], given[small]])
    values = {"k": k, "v": v, "high": eq.givens[high], "low": eq.givens[low], "r": k * eq.x}
    coefficient = [collected["k"]] if k > 1 else []
    moved = writer.add(term + " = {high} - {low} = {r}", values, [*coefficient, given[high], given[low]])
    if k > 1:
        writer.add("{v} = {r} / {k} = {x}", {"v": v, "r": k * eq.x, "k": k, "x": eq.x}, [moved["r"], collected["k"]])
    assert b - d == (c - a) * eq.x


SOLVERS: dict[str, Callable[[Equation, dict[str, Dependency], str, SolutionWriter], None]] = {
    "add": solve_one_side,
    "sub": solve_one_side,
    "both": solve_both_sides,
    "paren_add": solve_parentheses,
    "paren_sub": solve_parentheses,
}


def generate_linear_equation(rng: random.Random, split: str = "train", form: str | None = None) -> ReasoningItem:
    """Generate one linear equation with a positive integer solution (1..20) and its solution steps.

    A number stated in the question is a dependency at its place in the question; a computed number is a
    dependency at the place of the step that computed it.

    Args:
        rng: The source of randomness; the item is a pure function of its state.
        split: "train" or "heldout" (all given numbers obey `vocab.is_heldout_quantity`).
        form: One of `FORMS` ("add": 3x + 2 = 14, "sub": 5x - 7 = 18, "both": 2x + 9 = 3x + 4,
            "paren_add": 2(x + 3) = 16, "paren_sub": 2(x - 3) = 4); random when None.

    Returns:
        The item; its `meta` holds form, variable and num_steps.

    Raises:
        ValueError: If the split or the form is unknown.
    """
    validate_split(split)
    if form is not None and form not in FORMS:
        raise ValueError(f"Unknown equation form {form!r}: use one of {', '.join(FORMS)}.")
    form = form or rng.choice(FORMS)
    variable = rng.choice(VARIABLES)
    equation = sample_equation(rng, split, form)
    sentence = Sentence(rng.choice(PHRASINGS).replace("{eq}", EQUATIONS[form]), {"v": variable, **equation.givens})
    question = join_sentences([sentence])
    given = {name: Dependency.in_question(span) for name, span in sentence.spans.items() if name != "v"}
    writer = SolutionWriter()
    SOLVERS[form](equation, given, variable, writer)
    return ReasoningItem(
        id="",
        task="linear_equation",
        split=split,
        question=question,
        steps=writer.steps,
        answer=str(equation.x),
        dependencies=writer.dependencies,
        distractors=[],
        meta={"form": form, "variable": variable, "num_steps": len(writer.steps)},
    )
