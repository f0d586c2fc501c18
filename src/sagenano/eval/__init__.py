"""Evaluation: held-out synthetic tasks and the paper's benchmarks (registry, loaders, answer extraction)."""

from .benchmarks import (
    BenchItem,
    Task,
    UnknownTaskError,
    benchmarks_dir,
    get_task,
    load_items,
    shot_items,
    task_names,
)
from .extract import ANSWER_KINDS, answers_match, extract_answer, normalize_math

__all__ = [
    "ANSWER_KINDS",
    "BenchItem",
    "Task",
    "UnknownTaskError",
    "answers_match",
    "benchmarks_dir",
    "extract_answer",
    "get_task",
    "load_items",
    "normalize_math",
    "shot_items",
    "task_names",
]
