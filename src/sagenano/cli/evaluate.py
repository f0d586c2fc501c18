"""`sage-nano eval` (benchmarks) and `sage-nano report` (the paper's tables, measured)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import ModelPath, app, console, fail, untrained_panel


@app.command("eval")
def evaluate(
    tasks: Annotated[str, typer.Option(help="Comma-separated task names (an unknown name lists the valid ones).")],
    model: ModelPath = None,
    limit: Annotated[int | None, typer.Option(help="Answer only the first N items of each task.")] = None,
    shots: Annotated[int, typer.Option(help="Worked exemplars before each question (0: zero-shot reasoning).")] = 0,
    scoring: Annotated[
        str, typer.Option(help="generate (a chain, then its extracted answer) or loglik (best option by likelihood).")
    ] = "generate",
    batch_size: Annotated[int, typer.Option(help="Items generated together.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Longest chain per item.")] = 256,
    data: Annotated[Path | None, typer.Option(help="Read this file instead of the task's own (one task only).")] = None,
    source: Annotated[str, typer.Option(help="file (local benchmark files) or hub (Hugging Face datasets).")] = "file",
    out: Annotated[Path, typer.Option(help="Folder for <task>.jsonl (one line per item) and summary.json.")] = Path(
        "runs/eval"
    ),
) -> None:
    """Score a model on benchmarks: a progress bar, one JSONL line per item, a summary table.

    A rerun with the same --out skips the items already answered. Under `torchrun --nproc_per_node N`
    every rank answers a slice and rank 0 merges the results.
    """
    from ..eval.benchmarks import UnknownTaskError, get_task
    from ..eval.runner import EvalSettings, evaluate_task
    from ..loading import load_model
    from ..train.distributed import init_runtime, shutdown

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    try:
        for name in names:
            get_task(name)
    except UnknownTaskError as error:
        fail(str(error))
    if not names:
        fail("--tasks is empty; name at least one task")
    if data is not None and len(names) != 1:
        fail("--data replaces one task's file: name exactly one task")
    if (limit is not None and limit < 1) or shots < 0 or batch_size < 1 or max_new_tokens < 1:
        fail("--limit, --batch-size and --max-new-tokens must be at least 1, --shots at least 0")
    runtime = init_runtime()
    try:
        loaded = load_model(model)
        settings = EvalSettings(limit, shots, scoring, batch_size, max_new_tokens, data, source, loaded.calibration)
        loaded.model.to(runtime.device)
        summaries = [evaluate_task(loaded.model, loaded.tokenizer, name, out, settings, runtime) for name in names]
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        fail(str(error))
    finally:
        shutdown(runtime)
    if runtime.is_main:
        _write_summaries(summaries, loaded.source, out)


def _write_summaries(summaries: list[dict], source: str, out: Path) -> None:
    (out / "summary.json").write_text(json.dumps({"model": source, "tasks": summaries}, indent=2) + "\n")
    table = Table(title=f"{source} — {out}")
    for column in ("task", "items", "accuracy", "no answer", "skipped", "mean confidence", "ECE"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for s in summaries:
        percent = f"{s['accuracy']:.1%}" if s["accuracy"] is not None else "-"
        confidence = f"{s['mean_confidence']:.2f}" if s["mean_confidence"] is not None else "-"
        ece = f"{s['ece']:.3f}" if s["ece"] is not None else "-"
        table.add_row(s["task"], str(s["n"]), percent, str(s["no_answer"]), str(s["skipped"]), confidence, ece)
    console.print(table)


@app.command()
def report(
    model: ModelPath = None,
    out: Annotated[Path, typer.Option(help="Folder for report.md, results.json, figures/ and eval/.")] = Path(
        "runs/report"
    ),
    benchmarks: Annotated[
        str | None, typer.Option(help="Comma-separated tasks for the accuracy table (default: every benchmark).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Items per benchmark.")] = 50,
    quality_items: Annotated[int, typer.Option(help="Explained items per synthetic task (quality, overhead).")] = 5,
    introspection_items: Annotated[int, typer.Option(help="Gold-chain items per task for dependency tracking.")] = 20,
    baselines: Annotated[
        str, typer.Option(help="Attribution baselines beside the engine: comma list, or none.")
    ] = "attention,gradient,integrated_gradients,lime,shap",
    ablations: Annotated[
        Path | None, typer.Option(help="A folder of trained ablation models, each with its eval.json.")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest chain per item.")] = 256,
) -> None:
    """Measure the paper's tables on a model and write a Markdown report with PNG figures.

    Accuracy per benchmark, introspection accuracy against attribution baselines, explanation quality,
    overhead per engine component, ablations (when trained), the error taxonomy and a reliability diagram.
    Every number comes from this run; the benchmark answers are kept in <out>/eval and reused on a rerun.
    """
    from ..eval.benchmarks import UnknownTaskError, benchmarks_dir, get_task
    from ..eval.paper_tables import ReportSettings, build_report
    from ..eval.paper_tables import introspection_settings as make_introspection
    from ..loading import load_model

    settings = ReportSettings()
    names = tuple(t.strip() for t in benchmarks.split(",") if t.strip()) if benchmarks else settings.benchmarks
    try:
        for name in names:
            task = get_task(name)
            if task.default_file and not (benchmarks_dir() / task.default_file).is_file():
                raise FileNotFoundError(f"benchmark {name!r} has no file at {benchmarks_dir() / task.default_file}")
        introspection = make_introspection(introspection_items, baselines)
    except FileNotFoundError as error:
        fail(f"{error}; or choose other benchmarks with --benchmarks")
    except (UnknownTaskError, ValueError) as error:
        fail(str(error))
    if min(limit, quality_items, introspection_items, max_new_tokens) < 1:
        fail("--limit, --quality-items, --introspection-items and --max-new-tokens must be at least 1")
    try:
        loaded = load_model(model)
    except (ValueError, FileNotFoundError) as error:
        fail(str(error))
    if not loaded.trained:
        console.print(untrained_panel())
    settings = ReportSettings(
        names, limit, quality_items, max_new_tokens, settings.batch_size, introspection, ablations
    )
    path = build_report(loaded.model, loaded.tokenizer, loaded.source, out, settings, loaded.calibration)
    console.print(f"report written to {path}")
