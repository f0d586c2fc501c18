"""What the `sage-nano` commands share: the typer app and its sub-apps, the console, common arguments, errors."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel

from ..inverse.options import ExplainOptions

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


DEFAULTS = ExplainOptions()  # explain's flags default to the engine's options (no torch import: --help is fast)


def fail(message: str) -> None:
    """Prints the error for the user and exits with status 2 (no traceback)."""
    console.print(f"[bold red]error:[/] {message}")
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
