"""`sage-nano explain` and `sage-nano trace`: a question's reasoning chain, explained or traced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from .common import (
    DEFAULTS,
    Chat,
    ModelPath,
    Question,
    Steps,
    app,
    check_options,
    check_question,
    console,
    fail,
    interruptible,
    phase_line,
    untrained_panel,
)


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
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = DEFAULTS.max_new_tokens,
    threshold: Annotated[
        float, typer.Option(help="Decision score (0..1) at which a token is a decision point.")
    ] = DEFAULTS.threshold,
    decision_score: Annotated[
        str, typer.Option(help="entropy, margin, meta (SAGE head), combined, or auto (combined on SAGE models).")
    ] = DEFAULTS.decision_score,
    alternatives: Annotated[
        int, typer.Option(help="Alternative tokens rolled out per decision point.")
    ] = DEFAULTS.alternatives,
    rollouts: Annotated[bool, typer.Option(help="Roll every alternative out to its own answer.")] = DEFAULTS.rollouts,
    attention: Annotated[
        str,
        typer.Option(
            help="Attention aggregate of the dependency score: mean, last, rollout, group:NAME, or auto "
            "(SAGE's reasoning heads on SAGE models, else mean)."
        ),
    ] = DEFAULTS.attention_aggregate,
    validate: Annotated[bool, typer.Option(help="Check every claim by intervention on the model.")] = DEFAULTS.validate,
    steps: Steps = DEFAULTS.step_strategy,
    chat: Chat = DEFAULTS.chat,
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
    allow_mismatched_weights: Annotated[
        bool,
        typer.Option(
            help="Load --model even when tensors are missing, unexpected or reshaped against its config.json "
            "(they stay random: the chain is noise there). Off: such a model is refused."
        ),
    ] = False,
) -> None:
    """Answer QUESTION with a reasoning chain and explain it: decision points, the alternatives and where they
    lead, confidence, the spans each step rests on, and every claim checked by intervention on the model."""
    from ..inverse.render.words import DEPTHS

    # Everything the user typed is checked before the model loads (seconds): a mistake fails at once.
    if depth not in DEPTHS:
        fail(f"unknown depth {depth!r}; choose one of {', '.join(DEPTHS)}")
    check_question(question)
    options = check_options(
        max_new_tokens=max_new_tokens,
        threshold=threshold,
        decision_score=decision_score,
        alternatives=alternatives,
        rollouts=rollouts,
        attention_aggregate=attention,
        validate=validate,
        step_strategy=steps,
        chat=chat,
    )
    to_stdout = json_out is not None and str(json_out) == "-"
    with interruptible():
        loaded, report = _run_explain(model, question, options, not to_stdout, allow_mismatched_weights)
    if record_step is not None:
        _check_record_step(record_step, len(report.steps))
    if to_stdout:
        print(report.to_json())
    else:
        _show_explained(loaded, report, depth, json_out, html_out)
    if record_step is not None:
        path = record_out or Path(f"step-{record_step}.safetensors")
        with interruptible():
            _write_record(loaded, report, record_step, path, quiet=to_stdout)


def _run_explain(model: str | None, question: str, options: dict, progress_shown: bool, allow_mismatch: bool = False):
    """Loads the model and explains, with a phase line on stderr while it works (not when stdout is the report)."""
    from ..inverse import explain as run_explain
    from ..loading import load_model

    with phase_line(progress_shown) as progress:
        try:
            loaded = load_model(model, allow_mismatched_weights=allow_mismatch)
            report = run_explain(
                loaded.model,
                loaded.tokenizer,
                question,
                model_name=loaded.source,
                calibration=loaded.calibration,
                progress=progress,
                **options,
            )
        except (ValueError, FileNotFoundError) as error:
            fail(str(error))
    return loaded, report


def _show_explained(loaded, report, depth: str, json_out: Path | None, html_out: Path | None) -> None:
    if not loaded.trained:
        console.print(untrained_panel())
    report.show(depth, console)
    if json_out is not None:
        json_out.write_text(report.to_json())
        console.print(f"report written to {json_out}")
    if html_out is not None:
        html_out.write_text(report.to_html(depth), encoding="utf-8")
        console.print(f"HTML report written to {html_out}")


def _check_record_step(step: int, count: int) -> None:
    if count == 0:
        fail("--record-step: the chain has no steps to record")
    if not 1 <= step <= count:
        fail(f"--record-step {step} is out of range: the chain has {count} steps, choose 1..{count}")


def _write_record(loaded, report, step: int, path: Path, quiet: bool) -> None:
    """Records step `step` (1-based) and writes it; with --json - the message goes to stderr."""
    from ..inverse import record_step

    try:
        record_step(loaded.model, loaded.tokenizer, report, step - 1).to_safetensors(path)
    except (ValueError, OSError) as error:
        fail(f"--record-step: {error}")
    message = f"step {step} record written to {path}"
    (Console(stderr=True) if quiet else console).print(message)


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
    from ..generation import trace_generate
    from ..loading import load_model

    try:
        loaded = load_model(model)
        trace = trace_generate(
            loaded.model,
            loaded.tokenizer,
            question,
            max_new_tokens=max_new_tokens,
            top_k=top_k,
            step_strategy=steps,
            do_sample=sample,
            temperature=temperature,
            seed=seed,
            chat=chat,
        )
    except (ValueError, FileNotFoundError) as error:
        fail(str(error))
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
        console.print(untrained_panel())
    console.print(f"[bold]question:[/] {question}")
    console.print(Panel(trace.text or "(nothing generated)", title=f"reasoning chain ({trace.finish_reason})"))
    _print_steps(trace)
    _print_uncertain_tokens(trace, uncertain)
    console.print(
        "[dim]Raw measurements only; `sage-nano explain` finds the decision points, rolls out the "
        "alternatives, ranks the dependencies and checks every claim.[/]"
    )


def _print_steps(trace) -> None:
    table = Table(title="steps", show_lines=False)
    for column in ("#", "step", "tokens", "mean p", "min p", "entropy"):
        table.add_column(column, justify="right" if column not in ("step",) else "left")
    for step, stats in zip(trace.steps, trace.step_stats(), strict=True):
        text = step.text if len(step.text) <= 70 else step.text[:67] + "..."
        table.add_row(
            str(step.index + 1),
            text,
            str(step.token_end - step.token_start),
            f"{stats['mean_prob']:.3f}",
            f"{stats['min_prob']:.3f}",
            f"{stats['entropy']:.2f}",
        )
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
            str(t),
            repr(trace.tokens[t]),
            f"{trace.logprobs[t].exp():.3f}",
            f"{trace.normalized_entropies[t]:.2f}",
            alternatives,
        )
    console.print(table)
