"""The introspection run: `measure_introspection` over the tasks' held-out items, and its projected time."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace

from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...data import generate_items, prompt_text
from ...generation import render_prompt
from ...inverse.confidence import Calibration
from ..task_accuracy import TASKS
from .calibration import calibrate_run
from .measure import measure_item
from .metrics import mean
from .settings import PARTS, IntrospectionSettings
from .summary import goals, summarise

WARM_ITEMS = 2  # the first items of every task, measured first and timed for the projection
ISSUE_ITEMS = 200  # own and decision items per task that issue 26 asks a run to measure


def part_counts(settings: IntrospectionSettings) -> dict[str, int]:
    """Items per task that each part measures (the first ones of the task). Decision items are own items too (their
    default report is the own report); faithfulness reads the gold chains of the dependency items."""
    n, decision = settings.n, settings.decision_items
    own = max(settings.own_items, decision)
    return {
        "dependency": n,
        "baselines": n if settings.baselines else 0,
        "faithfulness": min(settings.faithfulness_items, n),
        "own": own,
        "claims": own,
        "alternatives_low": decision,
        "decision": decision,
    }


def items_per_task(settings: IntrospectionSettings) -> int:
    return max(part_counts(settings).values())


def projected_seconds(seconds: dict[str, dict[str, list[float]]], counts: dict[str, int]) -> float:
    """Seconds the whole run takes at each task's measured mean per part (parts never measured count 0)."""
    return sum(mean(v) * counts[part] for task in seconds.values() for part, v in task.items() if v)


def projection(
    seconds: dict[str, dict[str, list[float]]], settings: IntrospectionSettings, calibration: dict, tasks: Sequence[str]
) -> dict:
    """This run's projected minutes of items, and those of a default run and of an issue-scale run (default counts
    but `ISSUE_ITEMS` own and decision items per task; all tasks, this run's baselines), at the measured speeds. The
    calibration set is counted at the default size at this run's speed (0 when this run did not build one)."""
    default = replace(IntrospectionSettings(), baselines=settings.baselines)
    issue = replace(default, own_items=ISSUE_ITEMS, decision_items=ISSUE_ITEMS)
    per_calibration_item = calibration.get("seconds", 0.0) / max(1, calibration.get("n_items", 0))
    needs_set = calibration.get("source") != "stored"  # the stored calibration, when complete, needs no set
    calibration_seconds = per_calibration_item * default.calibration_items * len(TASKS) if needs_set else 0.0

    def minutes(counts: dict[str, int]) -> float:
        return (projected_seconds(seconds, counts) * len(TASKS) / len(tasks) + calibration_seconds) / 60

    return {
        "this_run_minutes": projected_seconds(seconds, part_counts(settings)) / 60,
        "default_run_minutes": minutes(part_counts(default)),
        "issue_run_minutes": minutes(part_counts(issue)),
        "default_calibration_minutes": calibration_seconds / 60,
    }


def describe_projection(projected: dict) -> str:
    d = IntrospectionSettings()
    return (
        f"projected: this run {projected['this_run_minutes']:.1f} min of items; a default run (n {d.n}, own "
        f"{d.own_items}, decision {d.decision_items}, faithfulness {d.faithfulness_items}, calibration "
        f"{d.calibration_items} items per task, {len(TASKS)} tasks) {projected['default_run_minutes']:.1f} min; "
        f"with {ISSUE_ITEMS} own and decision items per task (issue 26's scale) "
        f"{projected['issue_run_minutes']:.1f} min (each with {projected['default_calibration_minutes']:.1f} min "
        "of calibration set)"
    )


def json_ready(value):
    """`value` with NaN as None and tuples as lists, for `json.dump`."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def check_prompt_format(tokenizer) -> None:
    if render_prompt(tokenizer, "Q?", None) != prompt_text("Q?"):
        raise ValueError(
            "introspection accuracy needs SAGE's prompt format (<|question|>q<|step|>) from the "
            "tokenizer's chat template; save the model with its chat_template.jinja"
        )


def measure_introspection(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    settings: IntrospectionSettings | None = None,
    tasks: Sequence[str] = TASKS,
    progress: bool = True,
    loaded_calibration: Calibration | None = None,
) -> dict:
    """Introspection accuracy of the engine, and of the baselines, on held-out items (`docs/introspection.md`).

    Args:
        settings: item counts, seeds and baselines (default `IntrospectionSettings()`: a run of hours on a CPU).
        tasks: synthetic tasks to measure, each summarised alone and all together as "overall".
        progress: show progress bars and print the projected time once the first items are measured.
        loaded_calibration: the model's stored calibration (`load_model(...).calibration`); used when it calibrates
            steps too, else the whole calibration is fitted on the calibration set (`calibrate_run`).

    Returns:
        A JSON-ready dict (NaN as None): "settings" (with the run's calibration), "tasks", "methods" (the
        rankings of parts 1 and 5), "counts" (items per task and part), "calibration" (what the calibration set
        gave), "summary" (per task and "overall": every part per method with its step or item counts, and
        "timings": seconds per item of each part and per explained step of each method), "goals", "timings"
        (total and calibration seconds, projected minutes) and "items" (every item's records, per task).
    """
    settings = settings or IntrospectionSettings()
    tasks = list(tasks)
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise ValueError(f"unknown or no tasks {unknown or tasks}; choose from {', '.join(TASKS)}")
    check_prompt_format(tokenizer)
    started = time.perf_counter()
    calibration, settings = calibrate_run(model, tokenizer, loaded_calibration, tasks, settings)
    counts = part_counts(settings)
    total = items_per_task(settings)
    items = {t: generate_items(t, total, settings.seed, "heldout") for t in tasks}
    warm = min(WARM_ITEMS, total)
    order = [(t, i) for i in range(warm) for t in tasks] + [(t, i) for t in tasks for i in range(warm, total)]
    seconds: dict[str, dict[str, list[float]]] = {t: {p: [] for p in PARTS} for t in tasks}
    results: dict[str, list[dict]] = {t: [] for t in tasks}
    bar = tqdm(order, desc="items", unit="item", disable=not progress)
    for done, (task, i) in enumerate(bar, start=1):
        result = measure_item(
            model,
            tokenizer,
            items[task][i],
            settings,
            own=i < counts["own"],
            decision=i < counts["decision"],
            faithfulness=i < counts["faithfulness"],
            dependency=i < counts["dependency"],
        )
        results[task].append(result)
        for part, value in result["seconds"].items():
            seconds[task][part].append(value)
        if progress and done == warm * len(tasks):
            _report_warm_items(bar.write, seconds, warm, projection(seconds, settings, calibration, tasks))
    summary = {t: summarise(results[t], settings.methods) for t in tasks}
    summary["overall"] = summarise([r for t in tasks for r in results[t]], settings.methods)
    return json_ready(
        {
            "settings": asdict(settings),
            "tasks": tasks,
            "methods": settings.methods,
            "counts": counts,
            "calibration": calibration,
            "summary": summary,
            "goals": goals(summary["overall"]),
            "timings": {
                "total_seconds": time.perf_counter() - started,
                "calibration_seconds": calibration.get("seconds"),
                "projection": projection(seconds, settings, calibration, tasks),
            },
            "items": results,
        }
    )


def _report_warm_items(write: Callable[[str], None], seconds: dict, warm: int, projected: dict) -> None:
    per = "; ".join(
        f"{t}: " + ", ".join(f"{p} {mean(v):.2f}" for p, v in parts.items() if v) for t, parts in seconds.items()
    )
    write(f"seconds per item and part (first {warm} items): {per}")
    write(describe_projection(projected))
