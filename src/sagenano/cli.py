"""The `sage-nano` command: explain a reasoning chain, build models and tokenizers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

app = typer.Typer(
    help="SAGE-nano: inverse reasoning for language models. Generate a reasoning chain and show, "
    "token by token and step by step, what the model measured while choosing it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
tokenizer_app = typer.Typer(help="Train and inspect byte-level BPE tokenizers.", no_args_is_help=True)
model_app = typer.Typer(help="Build SAGE models from the named presets and inspect their sizes.", no_args_is_help=True)
data_app = typer.Typer(help="Generate synthetic reasoning tasks with ground truth.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(model_app, name="model")
app.add_typer(data_app, name="data")
console = Console()

# Arguments and options that several commands share.
Question = Annotated[str, typer.Argument(help="The question or problem to reason about.")]
ModelPath = Annotated[
    str | None,
    typer.Option(
        help="A local Hugging Face checkpoint folder, a hub id, or preset:NAME (an untrained SAGE preset). "
        "Default: the model that ships with the package."
    ),
]
Steps = Annotated[str, typer.Option(help="How to cut the chain into steps: auto, tokens, lines, sentences, markers.")]
Chat = Annotated[bool | None, typer.Option(help="Use the tokenizer's chat template (default: when it has one).")]


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


@app.command()
def explain(
    question: Question,
    model: ModelPath = None,
    depth: Annotated[
        str,
        typer.Option(
            help="How the explanation is written: novice (plain words), intermediate (step by step), "
            "expert (every score)."
        ),
    ] = "intermediate",
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 160,
    threshold: Annotated[float, typer.Option(help="Decision score (0..1) at which a token is a decision point.")] = 0.3,
    decision_score: Annotated[
        str, typer.Option(help="entropy, margin, meta (SAGE head), combined, or auto (combined on SAGE models).")
    ] = "auto",
    alternatives: Annotated[int, typer.Option(help="Alternative tokens rolled out per decision point.")] = 5,
    rollouts: Annotated[bool, typer.Option(help="Roll every alternative out to its own answer.")] = True,
    attention: Annotated[
        str,
        typer.Option(
            help="Attention aggregate of the dependency score: mean, last, rollout, group:NAME, or auto "
            "(SAGE's reasoning heads on SAGE models, else mean)."
        ),
    ] = "auto",
    validate: Annotated[bool, typer.Option(help="Check every claim by intervention on the model.")] = True,
    steps: Steps = "auto",
    chat: Chat = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON to this file ('-' = stdout only).")
    ] = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML report here.")] = None,
    record_step: Annotated[
        int | None,
        typer.Option(
            help="Also record step K (1 = the first step) as tensors: attention and its gradient, value "
            "contributions, decision scores, alternatives' attention (the paper's Table 1)."
        ),
    ] = None,
    record_out: Annotated[
        Path | None, typer.Option(help="Where --record-step writes its safetensors file (default: step-K.safetensors).")
    ] = None,
) -> None:
    """Answer QUESTION with a reasoning chain and explain it: decision points, the alternatives and where they
    lead, confidence, the spans each step rests on, and every claim checked by intervention on the model."""
    from .inverse import DEPTHS
    from .inverse import explain as run_explain
    from .loading import load_model

    if depth not in DEPTHS:
        _fail(f"unknown depth {depth!r}; choose one of {', '.join(DEPTHS)}")
    try:
        loaded = load_model(model)
        report = run_explain(
            loaded.model, loaded.tokenizer, question, model_name=loaded.source, max_new_tokens=max_new_tokens,
            threshold=threshold, decision_score=decision_score, alternatives=alternatives, rollouts=rollouts,
            attention_aggregate=attention, validate=validate, step_strategy=steps, chat=chat,
            calibration=loaded.calibration,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    if record_step is not None:
        _check_record_step(record_step, len(report.steps))
    if json_out is not None and str(json_out) == "-":
        print(report.to_json())
    else:
        _show_explained(loaded, report, depth, json_out, html_out)
    if record_step is not None:
        path = record_out or Path(f"step-{record_step}.safetensors")
        _write_record(loaded, report, record_step, path, quiet=json_out is not None and str(json_out) == "-")


def _show_explained(loaded, report, depth: str, json_out: Path | None, html_out: Path | None) -> None:
    if not loaded.trained:
        console.print(_untrained_panel())
    report.show(depth, console)
    if json_out is not None:
        json_out.write_text(report.to_json())
        console.print(f"report written to {json_out}")
    if html_out is not None:
        html_out.write_text(report.to_html(depth), encoding="utf-8")
        console.print(f"HTML report written to {html_out}")


def _check_record_step(step: int, count: int) -> None:
    if count == 0:
        _fail("--record-step: the chain has no steps to record")
    if not 1 <= step <= count:
        _fail(f"--record-step {step} is out of range: the chain has {count} steps, choose 1..{count}")


def _write_record(loaded, report, step: int, path: Path, quiet: bool) -> None:
    """Records step `step` (1-based) and writes it; with --json - the message goes to stderr."""
    from .inverse import record_step

    try:
        record_step(loaded.model, loaded.tokenizer, report, step - 1).to_safetensors(path)
    except (ValueError, OSError) as error:
        _fail(f"--record-step: {error}")
    message = f"step {step} record written to {path}"
    (Console(stderr=True) if quiet else console).print(message)


def _untrained_panel() -> Panel:
    return Panel(
        "This model is [bold]untrained[/]: randomly initialised weights, so its text is noise. Every number "
        "below is still measured on it. Pass --model with a trained checkpoint (any Hugging Face causal LM "
        "folder) for a meaningful chain.",
        title="untrained model",
        border_style="yellow",
    )


@app.command()
def trace(
    question: Question,
    model: ModelPath = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 128,
    steps: Steps = "auto",
    top_k: Annotated[int, typer.Option(help="Alternatives to show per token.")] = 5,
    uncertain: Annotated[int, typer.Option(help="How many of the most uncertain tokens to list.")] = 5,
    sample: Annotated[bool, typer.Option(help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (with --sample).")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Random seed for sampling.")] = None,
    chat: Chat = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the full trace as JSON to this file ('-' = stdout).")
    ] = None,
) -> None:
    """Generate a chain for QUESTION and show the raw per-token measurements (no explanation)."""
    from .generation import trace_generate
    from .loading import load_model

    try:
        loaded = load_model(model)
        trace = trace_generate(
            loaded.model, loaded.tokenizer, question, max_new_tokens=max_new_tokens, top_k=top_k,
            step_strategy=steps, do_sample=sample, temperature=temperature, seed=seed, chat=chat,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    report = {"model": loaded.source, "trained": loaded.trained, "question": question, **trace.to_dict()}
    if json_out is not None and str(json_out) == "-":
        print(json.dumps(report, indent=2))
        return
    _print_trace(loaded, question, trace, uncertain)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2))
        console.print(f"full trace written to {json_out}")


def _print_trace(loaded, question: str, trace, uncertain: int) -> None:
    console.print(f"[bold]model:[/] {loaded.source}")
    if not loaded.trained:
        console.print(_untrained_panel())
    console.print(f"[bold]question:[/] {question}")
    console.print(Panel(trace.text or "(nothing generated)", title=f"reasoning chain ({trace.finish_reason})"))
    _print_steps(trace)
    _print_uncertain_tokens(trace, uncertain)
    console.print("[dim]Raw measurements only; `sage-nano explain` finds the decision points, rolls out the "
                  "alternatives, ranks the dependencies and checks every claim.[/]")  # fmt: skip


def _print_steps(trace) -> None:
    table = Table(title="steps", show_lines=False)
    for column in ("#", "step", "tokens", "mean p", "min p", "entropy"):
        table.add_column(column, justify="right" if column not in ("step",) else "left")
    for step, stats in zip(trace.steps, trace.step_stats(), strict=True):
        text = step.text if len(step.text) <= 70 else step.text[:67] + "..."
        table.add_row(
            str(step.index + 1), text, str(step.token_end - step.token_start),
            f"{stats['mean_prob']:.3f}", f"{stats['min_prob']:.3f}", f"{stats['entropy']:.2f}",
        )  # fmt: skip
    console.print(table)


def _print_uncertain_tokens(trace, count: int) -> None:
    if count <= 0 or trace.num_tokens == 0:
        return
    order = trace.normalized_entropies.argsort(descending=True)[:count].tolist()
    table = Table(title=f"{len(order)} most uncertain tokens (normalised entropy: 0 certain, 1 uniform)")
    for column in ("pos", "chosen", "p", "entropy", "alternatives (p)"):
        table.add_column(column)
    for t in sorted(order):
        alternatives = ", ".join(
            f"{tok!r} {lp.exp():.3f}"
            for tok, lp in zip(trace.topk_tokens[t], trace.topk_logprobs[t], strict=True)
            if tok != trace.tokens[t]
        )
        table.add_row(
            str(t), repr(trace.tokens[t]), f"{trace.logprobs[t].exp():.3f}",
            f"{trace.normalized_entropies[t]:.2f}", alternatives,
        )  # fmt: skip
    console.print(table)


@tokenizer_app.command("train")
def tokenizer_train(
    files: Annotated[list[Path], typer.Argument(help="UTF-8 text files to learn the vocabulary from.")],
    out: Annotated[Path, typer.Option(help="Folder to write tokenizer.json into.")] = Path("tokenizer"),
    vocab_size: Annotated[int, typer.Option(help="Vocabulary size, special tokens included.")] = 4096,
    min_frequency: Annotated[int, typer.Option(help="Least count for a merge to be learned.")] = 2,
) -> None:
    """Train a byte-level BPE tokenizer (digits split one by one, SAGE's special tokens) on FILES."""
    from .tokenizer import save_tokenizer, train_tokenizer

    try:
        tokenizer = train_tokenizer(files, vocab_size=vocab_size, min_frequency=min_frequency)
    except ValueError as error:
        _fail(str(error))
    save_tokenizer(tokenizer, out)
    console.print(f"tokenizer with {len(tokenizer)} tokens written to {out}/tokenizer.json")


@model_app.command("init")
def model_init(
    out: Annotated[Path, typer.Option(help="Folder to save the model and tokenizer into.")],
    preset: Annotated[str, typer.Option(help="pico, micro, small, nano or medium.")] = "pico",
    seed: Annotated[int, typer.Option(help="Seed of the random initialisation.")] = 0,
) -> None:
    """Save a freshly initialised (untrained) SAGE model of PRESET with the shipped tokenizer."""
    from .config import PRESETS
    from .loading import fresh_sage_model

    if preset not in PRESETS:
        _fail(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    loaded = fresh_sage_model(preset, seed=seed)
    loaded.model.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    console.print(f"untrained SAGE {preset} saved to {out} ({loaded.model.num_parameters():,} parameters)")


@model_app.command("info")
def model_info(preset: Annotated[str, typer.Argument(help="pico, micro, small, nano or medium.")] = "pico") -> None:
    """Count a preset's parameters per component, on the meta device (no memory is allocated)."""
    from .config import PRESETS
    from .model_info import parameter_breakdown

    if preset not in PRESETS:
        _fail(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    table = Table(title=f"SAGE {preset}")
    table.add_column("component")
    table.add_column("parameters", justify="right")
    for name, count in parameter_breakdown(preset).items():
        table.add_row(name, f"{count:,}")
    console.print(table)


@data_app.command("synth")
def data_synth(
    task: Annotated[str, typer.Option(help="arithmetic, linear_equation, multiple_choice or logic.")],
    n: Annotated[int, typer.Option(help="How many items.")],
    out: Annotated[Path, typer.Option(help="JSONL file to write.")],
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same items.")] = 0,
    split: Annotated[str, typer.Option(help="train, or heldout (names and numbers never used in train).")] = "train",
) -> None:
    """Generate N checked items of TASK (question, steps, answer, dependency spans, distractors) as JSONL."""
    from .data import synth

    try:
        count = synth(task=task, n=n, seed=seed, out=out, split=split)
    except ValueError as error:
        _fail(str(error))
    console.print(f"{count} {task} items ({split}, seed {seed}) written to {out}; every one passed the checker")


@app.command()
def train(
    recipe: Annotated[Path, typer.Option(help="YAML recipe (see recipes/).")],
    out: Annotated[Path, typer.Option(help="Run folder: data, checkpoints, metrics.jsonl, and the final model/.")],
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's latest checkpoint.")] = False,
    stop_after: Annotated[
        int | None, typer.Option(help="Stop with a checkpoint after this many steps (continue later with --resume).")
    ] = None,
) -> None:
    """Train a SAGE model through the recipe's curriculum (base LM -> chain of thought -> inverse).

    Runs as one process, or under `torchrun --nproc_per_node N` with DDP or FSDP2 (the recipe's
    `distributed`); SIGTERM writes a checkpoint and stops cleanly.
    """
    from .train.recipe import Recipe
    from .train.trainer import TrainingDiverged
    from .train.trainer import train as run_training

    try:
        final = run_training(Recipe.load(recipe), out, resume=resume, stop_after=stop_after)
    except (ValueError, FileNotFoundError, TrainingDiverged) as error:
        _fail(str(error))
    console.print(f"done: {final}")


@app.command()
def calibrate(
    model: Annotated[
        str | None, typer.Option(help="A local model folder (default: the model that ships with the package).")
    ] = None,
    tasks: Annotated[str, typer.Option(help="Comma-separated synthetic tasks to calibrate on.")] = (
        "arithmetic,linear_equation,multiple_choice,logic"
    ),
    n: Annotated[int, typer.Option(help="Items per task (the isotonic curve wants a few hundred).")] = 250,
    seed: Annotated[
        int, typer.Option(help="Seed of the calibration items (held-out style, not the evaluation seed).")
    ] = 2_000_003,  # = inverse.calibration.CALIBRATION_SEED (kept literal so `--help` needs no torch import)
) -> None:
    """Fit the answer-confidence calibration (a temperature, then an isotonic curve) on held-out-style items and
    store it beside the weights (calibration.json)."""
    from .data import generate_items
    from .eval.synthetic import EVAL_SEED, TASKS
    from .inverse.calibration import calibrate as fit
    from .inverse.calibration import save_calibration
    from .loading import load_model, shipped_model_dir

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = sorted(set(names) - set(TASKS))
    if unknown or not names:
        _fail(f"unknown tasks {unknown}; choose from {', '.join(TASKS)}")
    if seed == EVAL_SEED:
        _fail(f"seed {seed} is the evaluation seed; calibrate on other items")
    if n < 1:
        _fail("--n must be at least 1")
    try:
        loaded = load_model(model)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    folder = Path(model) if model is not None else shipped_model_dir()
    if not (folder / "config.json").is_file():
        _fail(f"{folder} is not a local model folder; calibration is stored beside the weights")
    items = [item for task in names for item in generate_items(task, n, seed, "heldout")]
    try:
        result = fit(loaded.model, loaded.tokenizer, items)
    except ImportError as error:
        _fail(str(error))
    except ValueError as error:
        _fail(f"{error}: the model wrote no `<|answer|>` on these items (is it trained on the tasks?)")
    path = save_calibration(folder, result, f"{n} heldout-split items per task of {names}, seed {seed}")
    console.print_json(data=result)
    console.print(f"written to {path}")


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
    from .eval.benchmarks import UnknownTaskError, get_task
    from .eval.runner import EvalSettings, evaluate_task
    from .loading import load_model
    from .train.distributed import init_runtime, shutdown

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    try:
        for name in names:
            get_task(name)
    except UnknownTaskError as error:
        _fail(str(error))
    if not names:
        _fail("--tasks is empty; name at least one task")
    if data is not None and len(names) != 1:
        _fail("--data replaces one task's file: name exactly one task")
    if (limit is not None and limit < 1) or shots < 0 or batch_size < 1 or max_new_tokens < 1:
        _fail("--limit, --batch-size and --max-new-tokens must be at least 1, --shots at least 0")
    runtime = init_runtime()
    try:
        loaded = load_model(model)
        settings = EvalSettings(limit, shots, scoring, batch_size, max_new_tokens, data, source, loaded.calibration)
        loaded.model.to(runtime.device)
        summaries = [evaluate_task(loaded.model, loaded.tokenizer, name, out, settings, runtime) for name in names]
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        _fail(str(error))
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
    from .eval.benchmarks import UnknownTaskError, get_task
    from .eval.report import ReportSettings, build_report
    from .eval.report import introspection_settings as make_introspection
    from .loading import load_model

    settings = ReportSettings()
    names = tuple(t.strip() for t in benchmarks.split(",") if t.strip()) if benchmarks else settings.benchmarks
    try:
        for name in names:
            get_task(name)
        introspection = make_introspection(introspection_items, baselines)
    except (UnknownTaskError, ValueError) as error:
        _fail(str(error))
    if min(limit, quality_items, introspection_items, max_new_tokens) < 1:
        _fail("--limit, --quality-items, --introspection-items and --max-new-tokens must be at least 1")
    try:
        loaded = load_model(model)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    if not loaded.trained:
        console.print(_untrained_panel())
    settings = ReportSettings(names, limit, quality_items, max_new_tokens, settings.batch_size, introspection,
                              ablations)  # fmt: skip
    path = build_report(loaded.model, loaded.tokenizer, loaded.source, out, settings, loaded.calibration)
    console.print(f"report written to {path}")


@app.command()
def quantize(
    out: Annotated[Path, typer.Option(help="New folder for the quantized model, its tokenizer and calibration.")],
    bits: Annotated[int, typer.Option(help="4 or 8.")] = 4,
    model: ModelPath = None,
) -> None:
    """Quantize a model's linear layers and token embeddings to 4 or 8 bits (optimum-quanto; a tied LM head shares
    the embeddings' table). Use the folder with --model in explain, eval and serve."""
    try:
        from .quantize import quantize as run_quantize

        result = run_quantize(model, bits, out)
    except ImportError as error:
        _fail(f"quantize needs optimum-quanto ({error.name} is missing): pip install -e '.[quantize]'")
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        _fail(str(error))
    ratio = result.bytes_after / result.bytes_before_bf16
    console.print(
        f"{result.layers} linear and embedding layers quantized to {bits} bits; weights "
        f"{result.bytes_before_bf16 / 1e6:.2f} MB in bf16 -> {result.bytes_after / 1e6:.2f} MB ({ratio:.2f}x); "
        f"written to {result.out}"
    )


@app.command()
def serve(
    model: ModelPath = None,
    host: Annotated[str, typer.Option(help="Address to bind. The default serves this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    store: Annotated[
        Path | None, typer.Option(help="SQLite file of the kept reports (default: ~/.cache/sagenano/reports.sqlite3).")
    ] = None,
    capacity: Annotated[int, typer.Option(help="Reports kept; the oldest are dropped beyond it.")] = 1000,
    queue: Annotated[int, typer.Option(help="Requests queued or running at once; more get 503 + Retry-After.")] = 8,
    time_limit: Annotated[float, typer.Option(help="Seconds a request may take before it is stopped (504).")] = 120.0,
    max_new_tokens: Annotated[int, typer.Option(help="Largest max_new_tokens a request may ask for.")] = 512,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="CPU threads for the model (default: torch's, one per core). Fewer when other work "
            "shares the machine: threads waiting on a busy core slow every request many times over.",
        ),
    ] = None,
) -> None:
    """Serve the REST API and the web page: ask a question, watch the chain appear, click a decision point for
    its alternatives and "why this over that", edit the question for "what if", look for a simpler way."""
    import uvicorn

    from .loading import load_model
    from .serve import ServerSettings, create_app, default_store_path

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        loaded = load_model(model)
        settings = ServerSettings(
            store=store or default_store_path(), capacity=capacity, max_pending=queue, time_limit=time_limit,
            max_new_tokens=max_new_tokens,
        )  # fmt: skip
        server_app = create_app(loaded, settings)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    if not loaded.trained:
        console.print(_untrained_panel())
    console.print(f"serving {loaded.source} on http://{host}:{port}/  (API docs: http://{host}:{port}/docs)")
    uvicorn.run(server_app, host=host, port=port, log_level="info")


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
