"""Generate a checked synthetic data set and write it as JSONL (the `sage-nano data synth` hook)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .checker import check_item
from .io import write_jsonl
from .schema import ReasoningItem
from .tasks import iter_items


def checked_items(task: str, n: int, seed: int, split: str = "train", **options: object) -> Iterator[ReasoningItem]:
    """Yield generated items, each one verified by the independent checker.

    Raises:
        RuntimeError: If the checker finds a problem in a generated item (a generator bug).
    """
    for item in iter_items(task, n, seed, split, **options):
        problems = check_item(item)
        if problems:
            raise RuntimeError(f"Generated item {item.id} (seed {seed}) failed the checker: {'; '.join(problems)}")
        yield item


def synth(task: str, n: int, seed: int, out: Path, split: str = "train", **options: object) -> int:
    """Generate `n` items of `task`, check every one, and write them to `out` as JSONL.

    Args:
        task: A key of `sagenano.data.TASKS`.
        n: How many items.
        seed: Data-set seed; the same (task, n, seed, split, options) always writes the same file.
        out: Target JSONL file (written atomically; its folder is created).
        split: "train" or "heldout".
        **options: Task options (see `sagenano.data.generate_item`).

    Returns:
        The number of items written.

    Raises:
        ValueError: If the task, split, `n` or an option is invalid.
        RuntimeError: If a generated item fails the checker; nothing is written then.
    """
    return write_jsonl(checked_items(task, n, seed, split, **options), out)
