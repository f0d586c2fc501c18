"""What the `sage-nano` commands share: the typer app and its sub-apps, the console, common arguments, errors."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel

from ..inverse.options import ExplainOptions
from ..inverse.options import check_question as engine_check_question

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
error_console = Console(stderr=True)  # errors go to stderr, so `--json -` output stays clean when a run fails

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


DEFAULTS = ExplainOptions()  # explain's flags default to the engine's options (no torch import: --help is fast)
INTERRUPTED = 130  # the shell's exit status for a command stopped by Ctrl-C (128 + SIGINT)
Progress = Callable[[str, dict[str, Any]], None]


def fail(message: str) -> None:
    """Prints the error for the user and exits with status 2 (no traceback)."""
    error_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)  # one line, however narrow the terminal
    raise typer.Exit(code=2)


def untrained_panel() -> Panel:
    """The warning shown before working with a model that was never trained."""
    return Panel(
        "This model is [bold]untrained[/]: randomly initialised weights, so its text is noise. Every number "
        "below is still measured on it. Pass --model with a trained checkpoint (any Hugging Face causal LM "
        "folder) for a meaningful chain.",
        title="untrained model",
        border_style="yellow",
    )


def check_question(question: str) -> None:
    """Fails with a one-line error, before any model loads, for a question `explain` would refuse."""
    try:
        engine_check_question(question)
    except ValueError as error:
        fail(str(error))


def check_options(**options: Any) -> dict[str, Any]:
    """The options that differ from the defaults, checked before any model loads (a bad one fails with one line).
    Only those are validated, so that the defaults' names do not load the registries (and torch) behind them."""
    changed = {name: value for name, value in options.items() if value != getattr(DEFAULTS, name)}
    try:
        ExplainOptions.of(**changed)
    except ValueError as error:
        fail(str(error))
    return changed


@contextlib.contextmanager
def phase_line(enabled: bool) -> Iterator[Progress | None]:
    """A progress line on stderr while a command works ("loading the model…", then each phase `explain` reports);
    it disappears when the work ends. Yields the callback for `explain(progress=...)`, or None when disabled."""
    if not enabled:
        yield None
        return
    status_console = Console(stderr=True)
    with status_console.status("loading the model…") as status:

        def progress(event: str, data: dict[str, Any]) -> None:
            if event == "phase":
                status.update(f"{str(data.get('name', '')).replace('_', ' ')}…")

        yield progress


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C ends the command with "interrupted" on stderr and exit status 130, not a traceback or silence."""
    try:
        yield
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        raise typer.Exit(code=INTERRUPTED) from None
