"""Held-out accuracy and calibration of a model on the synthetic tasks (fresh seeds, unseen names and numbers)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data import generate_items, parse_answer, prompt_text
from ..data.schema import ReasoningItem
from ..decoding import is_sage, room_after
from ..generation import trace_generate
from ..inverse.answers import expected_calibration_error, marked_answer_tokens

if TYPE_CHECKING:
    from ..inverse.confidence import Calibration

TASKS = ("arithmetic", "linear_equation", "multiple_choice", "logic")
EVAL_SEED = 1_000_003  # never a training seed: recipes use small seeds


@dataclass
class Outcome:
    """One answered item: whether it was right and how confident the model was."""

    item: ReasoningItem
    predicted: str | None
    correct: bool
    answer_prob: float  # P(answer tokens | question, chain), from the generation itself
    meta_confidence: float | None  # SAGE meta-cognitive head's confidence on the answer tokens
    calibrated_prob: float | None = None  # answer_prob through the model's calibration (Calibration)


def bucket(item: ReasoningItem) -> str:
    """The report row of an item: arithmetic by step count, logic by proof depth."""
    if item.task == "arithmetic":
        return "arithmetic 2-3 steps" if item.meta["num_steps"] <= 3 else "arithmetic 4-5 steps"
    if item.task == "logic":
        return "logic depth <= 3" if item.meta["depth"] <= 3 else "logic depth 4-5"
    return item.task


@torch.no_grad()
def answer_items(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: list[ReasoningItem],
    batch_size: int = 32,
    max_new_tokens: int = 200,
    calibration: Calibration | None = None,
) -> list[Outcome]:
    """Greedy answers to `items`, with the probability the model gave its answer (and, given the model's
    calibration, the calibrated probability)."""
    outcomes = []
    for start in tqdm(range(0, len(items), batch_size), desc="answering", leave=False):
        chunk = items[start : start + batch_size]
        prompts = [prompt_text(item.question) for item in chunk]
        longest = max(len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts)
        room = room_after(model, longest, max_new_tokens)
        traces = trace_generate(model, tokenizer, prompts, max_new_tokens=room, attention="none", chat=False)
        for item, trace in zip(chunk, traces, strict=True):
            predicted = parse_answer(trace.text)
            meta, calibrated = rescore_answer(model, trace, calibration)
            outcomes.append(Outcome(item, predicted, predicted == item.answer, _answer_prob(trace), meta, calibrated))
    return outcomes


def _answer_prob(trace) -> float:
    span = marked_answer_tokens(trace)
    return float(trace.logprobs[span[0] : span[1]].sum().exp()) if span else 0.0


@torch.no_grad()  # the benchmark runner calls it outside answer_items' no_grad
def rescore_answer(model: PreTrainedModel, trace, calibration: Calibration | None) -> tuple[float | None, float | None]:
    """One forward pass over the chain: the meta head's confidence on the answer tokens (SAGE models) and the
    answer's calibrated probability (when the model has a calibration)."""
    sage = is_sage(model)
    if not sage and calibration is None:
        return None, None
    span = marked_answer_tokens(trace)
    if span is None:
        return (0.0 if sage else None), (0.0 if calibration is not None else None)
    ids = torch.cat([trace.prompt_ids, trace.token_ids])[None].to(model.device)
    out = model(ids, run_inverse=True) if sage else model(ids)
    offset = len(trace.prompt_ids)
    meta = float(out.confidence_logits[0, offset + span[0] : offset + span[1]].sigmoid().mean()) if sage else None
    calibrated = None
    if calibration is not None:
        logits = out.logits[0, offset - 1 + span[0] : offset - 1 + span[1]]
        calibrated = calibration.confidence(logits, trace.token_ids[span[0] : span[1]])
    return meta, calibrated


def evaluate_synthetic(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    n_per_task: int = 300,
    seed: int = EVAL_SEED,
    tasks: tuple[str, ...] = TASKS,
    batch_size: int = 32,
    calibration: Calibration | None = None,
    split: str = "heldout",
    task_options: dict[str, dict] | None = None,
) -> dict:
    """Exact-match accuracy per task (and bucket) on held-out items, and calibration of the answer confidence.

    `split="train"` draws fresh items of the training distribution instead (with a recipe's `task_options`), to
    tell what a model failed to learn from what it fails to carry over to unseen names and numbers.
    """
    options = task_options or {}
    items = [item for task in tasks for item in generate_items(task, n_per_task, seed, split, **options.get(task, {}))]
    outcomes = answer_items(model, tokenizer, items, batch_size, calibration=calibration)
    rows: dict[str, list[bool]] = defaultdict(list)
    for outcome in outcomes:
        rows[bucket(outcome.item)].append(outcome.correct)
        rows[f"all {outcome.item.task}"].append(outcome.correct)
    report = {name: {"n": len(v), "accuracy": sum(v) / len(v)} for name, v in sorted(rows.items())}
    correct = [o.correct for o in outcomes]
    errors = {"answer_prob_ece": expected_calibration_error([o.answer_prob for o in outcomes], correct)}
    if outcomes and outcomes[0].meta_confidence is not None:
        errors["meta_head_ece"] = expected_calibration_error([o.meta_confidence for o in outcomes], correct)
    if calibration is not None:
        calibrated = [o.calibrated_prob for o in outcomes]
        errors["calibrated_answer_prob_ece"] = expected_calibration_error(calibrated, correct)
        errors["answer_prob_ece15"] = expected_calibration_error([o.answer_prob for o in outcomes], correct, 15)
        errors["calibrated_answer_prob_ece15"] = expected_calibration_error(calibrated, correct, 15)
    return {
        "split": split,
        "seed": seed,
        "n_per_task": n_per_task,
        "accuracy": report,
        "calibration": errors,
        "overall_accuracy": sum(correct) / max(1, len(correct)),
    }
