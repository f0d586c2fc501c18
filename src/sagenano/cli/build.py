"""Commands that build: `tokenizer train`, `model init` / `info`, `data synth`, `train`, `calibrate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import app, console, data_app, fail, model_app, tokenizer_app


@tokenizer_app.command("train")
def tokenizer_train(
    files: Annotated[list[Path], typer.Argument(help="UTF-8 text files to learn the vocabulary from.")],
    out: Annotated[Path, typer.Option(help="Folder to write tokenizer.json into.")] = Path("tokenizer"),
    vocab_size: Annotated[int, typer.Option(help="Vocabulary size, special tokens included.")] = 4096,
    min_frequency: Annotated[int, typer.Option(help="Least count for a merge to be learned.")] = 2,
) -> None:
    """Train a byte-level BPE tokenizer (digits split one by one, SAGE's special tokens) on FILES."""
    from ..tokenizer import save_tokenizer, train_tokenizer

    try:
        tokenizer = train_tokenizer(files, vocab_size=vocab_size, min_frequency=min_frequency)
    except ValueError as error:
        fail(str(error))
    save_tokenizer(tokenizer, out)
    console.print(f"tokenizer with {len(tokenizer)} tokens written to {out}/tokenizer.json")


@model_app.command("init")
def model_init(
    out: Annotated[Path, typer.Option(help="Folder to save the model and tokenizer into.")],
    preset: Annotated[str, typer.Option(help="pico, micro, small, nano or medium.")] = "pico",
    seed: Annotated[int, typer.Option(help="Seed of the random initialisation.")] = 0,
) -> None:
    """Save a freshly initialised (untrained) SAGE model of PRESET with the shipped tokenizer."""
    from ..config import PRESETS
    from ..loading import fresh_sage_model

    if preset not in PRESETS:
        fail(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    loaded = fresh_sage_model(preset, seed=seed)
    loaded.model.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    console.print(f"untrained SAGE {preset} saved to {out} ({loaded.model.num_parameters():,} parameters)")


@model_app.command("info")
def model_info(preset: Annotated[str, typer.Argument(help="pico, micro, small, nano or medium.")] = "pico") -> None:
    """Count a preset's parameters per component, on the meta device (no memory is allocated)."""
    from ..config import PRESETS
    from ..model_info import parameter_breakdown

    if preset not in PRESETS:
        fail(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
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
    from ..data import synth

    try:
        count = synth(task=task, n=n, seed=seed, out=out, split=split)
    except ValueError as error:
        fail(str(error))
    console.print(f"{count} {task} items ({split}, seed {seed}) written to {out}; every one passed the checker")


@app.command()
def train(
    recipe: Annotated[Path, typer.Option(help="YAML recipe (see recipes/).")],
    out: Annotated[Path, typer.Option(help="Run folder: data, checkpoints, metrics.jsonl, and the final model/.")],
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's latest checkpoint.")] = False,
    resume_from: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="With --resume: the checkpoint to continue from (a name in RUN/checkpoints, e.g. stage2-step000250) "
            "instead of the latest; the checkpoints after it move to RUN/superseded/.",
        ),
    ] = None,
    stop_after: Annotated[
        int | None, typer.Option(help="Stop with a checkpoint after this many steps (continue later with --resume).")
    ] = None,
) -> None:
    """Train a SAGE model through the recipe's curriculum (base LM -> chain of thought -> inverse).

    Runs as one process, or under `torchrun --nproc_per_node N` with DDP or FSDP2 (the recipe's
    `distributed`); SIGTERM writes a checkpoint and stops cleanly.

    To fine-tune the shipped model (or any SAGE model folder) on your own chain-of-thought data, write a
    recipe with `init:` (the model folder), `tasks: {}` and `cot_files:` (JSONL files in GSM8K's,
    AQuA-RAT's or a plain {"question", "steps", "answer"} shape; bad lines are reported and skipped),
    e.g. recipes/finetune-gsm8k.yaml, then run it:

        sage-nano train --recipe recipes/finetune-gsm8k.yaml --out runs/mine
    """
    from ..train.recipe import Recipe
    from ..train.trainer import TrainingDiverged
    from ..train.trainer import train as run_training

    try:
        final = run_training(Recipe.load(recipe), out, resume=resume, stop_after=stop_after, resume_from=resume_from)
    except (ValueError, FileNotFoundError, TrainingDiverged) as error:
        fail(str(error))
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
    """Fit the calibration on held-out-style items and store it beside the weights (calibration.json): the answer's
    and the steps' confidence (a temperature, then an isotonic curve each), the token temperature (the one that makes
    reference chains most likely), and what makes a question unlike the model's training."""
    from ..data import generate_items
    from ..eval.task_accuracy import EVAL_SEED, TASKS
    from ..inverse.calibration import calibrate as fit
    from ..inverse.calibration import save_calibration
    from ..loading import load_model, shipped_model_dir

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = sorted(set(names) - set(TASKS))
    if unknown or not names:
        fail(f"unknown tasks {unknown}; choose from {', '.join(TASKS)}")
    if seed == EVAL_SEED:
        fail(f"seed {seed} is the evaluation seed; calibrate on other items")
    if n < 1:
        fail("--n must be at least 1")
    try:
        loaded = load_model(model)
    except (ValueError, FileNotFoundError) as error:
        fail(str(error))
    folder = Path(model) if model is not None else shipped_model_dir()
    if not (folder / "config.json").is_file():
        fail(f"{folder} is not a local model folder; calibration is stored beside the weights")
    items = [item for task in names for item in generate_items(task, n, seed, "heldout")]
    try:
        result = fit(loaded.model, loaded.tokenizer, items)
    except ImportError as error:
        fail(str(error))
    except ValueError as error:
        fail(f"{error}: the model wrote no `<|answer|>` on these items (is it trained on the tasks?)")
    path = save_calibration(folder, result, f"{n} heldout-split items per task of {names}, seed {seed}")
    console.print_json(data=result)
    console.print(f"written to {path}")
