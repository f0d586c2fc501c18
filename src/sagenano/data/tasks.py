"""The string-keyed registry of synthetic tasks and seeded, deterministic item generation."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterator
from dataclasses import replace

from .arithmetic import generate_arithmetic
from .choice import generate_multiple_choice
from .linear import generate_linear_equation
from .logic import generate_logic
from .schema import ReasoningItem, validate_split

TaskGenerator = Callable[..., ReasoningItem]  # (rng, split, **options) -> item
TASKS: dict[str, TaskGenerator] = {
    "arithmetic": generate_arithmetic,
    "linear_equation": generate_linear_equation,
    "multiple_choice": generate_multiple_choice,
    "logic": generate_logic,
}


def get_task(name: str) -> TaskGenerator:
    """Return the generator of task `name`.

    Raises:
        ValueError: If no task has that name; the message lists the valid ones.
    """
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}: use one of {', '.join(TASKS)}.")
    return TASKS[name]


def task_options(name: str) -> list[str]:
    """The keyword options that task `name` accepts (beyond rng and split)."""
    parameters = inspect.signature(get_task(name)).parameters
    return [p for p in parameters if p not in ("rng", "split")]


def _validate_options(name: str, options: dict[str, object]) -> None:
    unknown = sorted(set(options) - set(task_options(name)))
    if unknown:
        valid = ", ".join(task_options(name)) or "none"
        raise ValueError(f"Task {name!r} has no option(s) {', '.join(unknown)}: valid options are {valid}.")


def item_rng(task: str, seed: int, split: str, index: int) -> random.Random:
    """The random source of item `index`; it depends on nothing else, so item i is the same for any n."""
    return random.Random(f"{task}-{split}-{seed}-{index}")  # str seeds hash with SHA-512: stable across runs


def item_id(task: str, split: str, index: int) -> str:
    """The id of item `index`, e.g. "arithmetic-train-0000042"."""
    return f"{task}-{split}-{index:07d}"


def generate_item(task: str, index: int, seed: int, split: str = "train", **options: object) -> ReasoningItem:
    """Generate item `index` of `task` for `seed` and `split`.

    Args:
        task: A key of `TASKS`.
        index: Position of the item in its data set (0-based).
        seed: Data-set seed.
        split: "train" or "heldout".
        **options: Task options, e.g. min_steps / max_steps (arithmetic), form (linear_equation), base /
            final_step (multiple_choice), min_depth / max_depth / world / answer / attribute_pool / proof (logic).

    Returns:
        The item, with id "<task>-<split>-<index:07d>".

    Raises:
        ValueError: If the task, the split or an option is unknown or out of range.
    """
    generator = get_task(task)
    validate_split(split)
    _validate_options(task, options)
    item = generator(item_rng(task, seed, split, index), split, **options)
    return replace(item, id=item_id(task, split, index))


def iter_items(task: str, n: int, seed: int, split: str = "train", **options: object) -> Iterator[ReasoningItem]:
    """Yield items 0..n-1 of `task` one at a time (see `generate_item`)."""
    get_task(task)
    validate_split(split)
    _validate_options(task, options)
    if n < 0:
        raise ValueError(f"n must be >= 0, got n={n}.")
    for index in range(n):
        yield generate_item(task, index, seed, split, **options)


def generate_items(task: str, n: int, seed: int, split: str = "train", **options: object) -> list[ReasoningItem]:
    """Generate `n` items of `task`; the same (task, seed, split, index) always gives the same item.

    Args:
        task: A key of `TASKS` ("arithmetic", "linear_equation", "multiple_choice", "logic").
        n: How many items.
        seed: Data-set seed.
        split: "train" or "heldout" (disjoint names, logic attributes and given quantities).
        **options: Task options (see `generate_item`).

    Returns:
        The items, in index order.

    Raises:
        ValueError: If the task, the split, `n` or an option is invalid.
    """
    return list(iter_items(task, n, seed, split, **options))
