"""Synthetic reasoning tasks with ground truth (steps, dependency spans, distractors), a checker and JSONL I/O."""

from .arithmetic import generate_arithmetic
from .checker import check_item
from .choice import generate_multiple_choice
from .dataset import checked_items, synth
from .format import parse_answer, prompt_text, training_text
from .io import iter_jsonl, iter_records, read_jsonl, write_jsonl
from .linear import generate_linear_equation
from .logic import generate_logic
from .schema import SPLITS, Dependency, ReasoningItem, Span
from .tasks import TASKS, generate_item, generate_items, get_task, item_id, iter_items, task_options
from .vocab import is_heldout_quantity

__all__ = [
    "SPLITS",
    "TASKS",
    "Dependency",
    "ReasoningItem",
    "Span",
    "check_item",
    "checked_items",
    "generate_arithmetic",
    "generate_item",
    "generate_items",
    "generate_linear_equation",
    "generate_logic",
    "generate_multiple_choice",
    "get_task",
    "is_heldout_quantity",
    "item_id",
    "iter_items",
    "iter_jsonl",
    "iter_records",
    "parse_answer",
    "prompt_text",
    "read_jsonl",
    "synth",
    "task_options",
    "training_text",
    "write_jsonl",
]
