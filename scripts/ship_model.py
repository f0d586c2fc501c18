"""Ship a trained run as the package's default model, with a model card made only of measured numbers.

Usage: .venv/bin/python scripts/ship_model.py runs/pico [--n 300]

Copies `RUN/model` (weights, config, tokenizer with SAGE's question format) into
`src/sagenano/assets/model/`, fits the answer-confidence calibration (temperature, then isotonic curve) on
calibration items (held-out style, a seed other than the evaluation's) into `calibration.json`, evaluates it
on the held-out synthetic split, and writes `eval.json` and `MODEL_CARD.md` beside it. Tokens per stage are
counted by replaying each stage's batches (the order is deterministic); wall times come from the run's
metrics log (`stage_wall_times`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sagenano.data import generate_items
from sagenano.eval.task_accuracy import TASKS, evaluate_synthetic
from sagenano.inverse.calibration import CALIBRATION_SEED, calibrate, save_calibration
from sagenano.loading import load_model, shipped_model_dir
from sagenano.tokenizer import load_tokenizer, with_sage_prompt
from sagenano.train.batches import cumulative_tokens
from sagenano.train.prepare import stage_data_path
from sagenano.train.recipe import Recipe

FILES = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "recipe.json")


def copy_model(run: Path, target: Path, recipe: Recipe) -> str | None:
    """Copies the run's model and metrics log into `target`; for a run that started from a trained model (`init`),
    that model's metrics log and learning curve too. Returns the starting model's card (None: no `init`, or it has
    none)."""
    source = run / "model"
    if not (source / "model.safetensors").is_file():
        raise SystemExit(f"{source} has no trained model: finish the run first (sage-nano train --resume ...)")
    init = Path(recipe.init) if recipe.init else None
    init_card = init / "MODEL_CARD.md" if init else None
    starting_card = init_card.read_text() if init_card and init_card.is_file() else None
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in FILES:
        shutil.copyfile(source / name, target / name)
    shutil.copyfile(run / "metrics.jsonl", target / "training_metrics.jsonl")
    if init is not None:
        for name, copy in (("training_metrics.jsonl", "starting_model_metrics.jsonl"),
                           ("learning_curve.json", "learning_curve.json")):  # fmt: skip
            if (init / name).is_file():
                shutil.copyfile(init / name, target / copy)
    with_sage_prompt(load_tokenizer(target)).save_pretrained(target)
    return starting_card


def starting_model_section(recipe: Recipe, card: str | None) -> list[str]:
    """For a run that started from a trained model: where from, and the stages that trained it (its card's table)."""
    if not recipe.init:
        return []
    lines = ["", f"### The starting model (`init: {recipe.init}`)", ""]
    stages = card.split("## Stages", 1)[1].split("\n## ", 1)[0] if card and "## Stages" in card else ""
    own, _, earlier = stages.partition("### The starting model")  # its card lists its own starting model's stages

    def rows(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("|") and not line.startswith(("| stage", "|---"))]

    table = rows(earlier) + rows(own)
    if not table:
        return [*lines, "Its card was not at hand: its stages are not listed here."]
    header = ["| stage | steps | batch | peak lr | schedule | loss tokens | tokens seen | wall time | last loss |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    return [*lines, "Its stages, first to last, as its card measured them:", "", *header, *table]


def starting_model_curve(recipe: Recipe, card: str | None) -> list[str]:
    """The starting model's learning curve (and its extrapolation), as its card has them."""
    if not recipe.init or not card or "\n## Learning curve" not in card:
        return []
    curve = card.split("\n## Learning curve", 1)[1]
    return ["", f"## Learning curve of the starting model (`{recipe.init}`){curve.rstrip()}", ""]


def stage_tokens(run: Path, recipe: Recipe) -> list[dict]:
    """Loss tokens and all tokens each stage trained on, counted by replaying its batches."""
    tokenizer = load_tokenizer()
    rows = []
    for index, stage in enumerate(recipe.stages):
        loss_tokens, all_tokens = cumulative_tokens(
            stage_data_path(run, index, stage, recipe), tokenizer, stage.batch_size, stage.grad_accum, stage.loss_on,
            recipe.seed + index, recipe.max_length, stage.steps,
        )[-1]  # fmt: skip
        rows.append({"stage": stage.name, "steps": stage.steps, "batch": stage.batch_size * stage.grad_accum,
                     "lr": stage.lr, "schedule": stage.schedule, "loss_tokens": loss_tokens,
                     "tokens": all_tokens})  # fmt: skip
    return rows


def stage_wall_times(run: Path, recipe: Recipe) -> list[float]:
    """Seconds per stage, from the metrics log. Each process that trains a stage logs `seconds` since it started,
    so a stopped and resumed stage is a series of segments (the seconds fall back at each resume). A stage's time
    is its segments' logged seconds summed, scaled to the stage's steps by the steps they cover (a segment covers
    the steps from the checkpoint it resumed from to its last logged step): gaps between sessions do not count,
    and steps redone after a resume count once. The inverse stage is timed from stage 2's last checkpoint to its
    own last one, so it also counts synthesising its data (when it ran in one process)."""
    checkpoints = sorted((run / "checkpoints").glob("stage*-step*"), key=lambda p: p.stat().st_mtime)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    times, previous_end = [], None
    for index, stage in enumerate(recipe.stages):
        own = [p for p in checkpoints if p.name.startswith(f"stage{index + 1}-")]
        if stage.name == "inverse" and previous_end is not None:
            times.append(round(own[-1].stat().st_mtime - previous_end, 1))
        else:
            saved_steps = sorted(int(p.name.split("-step")[1]) for p in own)
            rows = [r for r in metrics if r["stage"] == stage.name]
            times.append(round(logged_seconds(rows, saved_steps, stage.steps), 1))
        previous_end = own[-1].stat().st_mtime
    return times


def logged_seconds(rows: list[dict], saved_steps: list[int], steps: int) -> float:
    """A stage's training seconds from its metrics rows (in log order) and its checkpoints' steps (see
    `stage_wall_times`)."""
    segments: list[list[dict]] = []
    for row in rows:
        if not segments or row["seconds"] < segments[-1][-1]["seconds"]:
            segments.append([])
        segments[-1].append(row)
    seconds = sum(segment[-1]["seconds"] for segment in segments)
    covered = sum(
        segment[-1]["step"] - max((s for s in saved_steps if s < segment[0]["step"]), default=0) for segment in segments
    )
    return seconds * steps / covered


def final_losses(run: Path) -> dict[str, float]:
    last: dict[str, float] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        last[record["stage"]] = record["loss"]
    return last


def _accuracy(report: dict, row: str) -> str:
    return f"{report['accuracy'][row]['accuracy']:.1%}" if row in report["accuracy"] else "–"


def model_card(
    recipe: Recipe, stages: list[dict], walls: list[float], losses: dict, report: dict, params: int,
    calibration_info: dict, train_report: dict, starting_card: str | None = None,
    recipe_path: str = "recipes/pico.yaml",
) -> str:  # fmt: skip
    calibration = report["calibration"]
    accuracy_rows = [
        f"| {name} | {row['n']} | {row['accuracy']:.1%} | {_accuracy(train_report, name)} |"
        for name, row in report["accuracy"].items()
    ]
    lines = [
        "# SAGE pico — the model that ships with sagenano",
        "",
        f"A {params:,}-parameter SAGE model (preset `{recipe.preset}`), trained on this project's CPU through the",
        "three-stage curriculum by the project's own command. Every number below was measured by",
        "`scripts/ship_model.py`; none is typed by hand.",
        "",
        "## Reproduce",
        "",
        "```bash",
        *([f"# first the model `init` names ({recipe.init}): its card's Reproduce says how"] if recipe.init else []),
        f"sage-nano train --recipe {recipe_path} --out runs/{Path(recipe_path).stem}",
        f"python scripts/ship_model.py runs/{Path(recipe_path).stem} --recipe-name {recipe_path}",
        "```",
        "",
        "## Data",
        "",
        "Synthetic tasks with ground truth (`sagenano.data`), seed " + str(recipe.seed) + ", training split:",
        "",
        *[f"- {task}: {n:,} items" for task, n in sorted(recipe.tasks.items())],
        *[
            f"- {task} options: " + ", ".join(f"`{k}: {v}`" for k, v in options.items())
            for task, options in sorted(recipe.task_options.items())
        ],
        *[f"- plain text in stage 1: `{name}`" for name in recipe.text_files],
        "",
        "Held-out evaluation uses the `heldout` split: fresh seeds, person names and logic attributes never used in",
        "training, and given quantities of two or more digits that end in 3 or 7 (never given in training).",
        "",
        "## Stages",
        "",
        "| stage | steps | batch | peak lr | schedule | loss tokens | tokens seen | wall time | last loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row, wall in zip(stages, walls, strict=True):
        lines.append(
            f"| {row['stage']} | {row['steps']} | {row['batch']} | {row['lr']:g} | {row['schedule']} | "
            f"{row['loss_tokens']:,} | {row['tokens']:,} | {wall / 60:.1f} min | "
            f"{losses.get(row['stage'], float('nan')):.3f} |"
        )
    lines += starting_model_section(recipe, starting_card)
    lines += [
        "",
        "Stage 3's wall time includes synthesising its data with the model it starts from (`sagenano.explain` on",
        "its own chains for the explanation it learns, and resampling from every step boundary for the",
        f"meta-cognitive head's decision labels). Machine: {os.cpu_count()} CPU cores, "
        f"bf16 autocast {'on' if recipe.bf16 else 'off'}.",
        "",
        f"## Held-out accuracy (exact match, {report['n_per_task']} items per task, seed {report['seed']})",
        "",
        "| task | n | exact match | training distribution |",
        "|---|---|---|---|",
        *accuracy_rows,
        "",
        "*Training distribution*: fresh items of the training split (same seed and count, the recipe's task options),",
        "not the items trained on; the gap to the held-out column is what does not carry over to unseen names,",
        "attributes and numbers.",
        "",
        "## Calibration",
        "",
        *[f"- {name}: {value:.3f}" for name, value in calibration.items()],
        "",
        "Expected calibration error on the held-out items above: `*_ece` with 10 equal-width bins, `*_ece15`",
        "with 15. `answer_prob` is the probability the model gave its own answer tokens; `calibrated_answer_prob`",
        f"the same through the calibration in `calibration.json`: the logits divided by the temperature "
        f"{calibration_info['temperature']:.3f}, then an isotonic curve of {len(calibration_info['curve_x'])} points,",
        f"both fitted on {calibration_info['fitted_on']} (ECE15 there: {calibration_info['ece15_before']:.3f} raw, "
        f"{calibration_info['ece15_temperature']:.3f} with the temperature, {calibration_info['ece15_after']:.3f}",
        "with both; numbers on the fit set flatter the fit, the held-out ones above do not). `meta_head` is the",
        "meta-cognitive head's confidence on the answer tokens.",
        "",
        *starting_model_curve(recipe, starting_card),
    ]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="run folder written by `sage-nano train --out`")
    parser.add_argument("--n", type=int, default=300, help="held-out items per task")
    parser.add_argument("--calibration-n", type=int, default=250, help="calibration items per task")
    parser.add_argument("--recipe-name", default="recipes/pico.yaml", help="the recipe file, for the card")
    args = parser.parse_args()
    recipe = Recipe(**json.loads((args.run / "model" / "recipe.json").read_text()))
    target = shipped_model_dir()
    starting_card = copy_model(args.run, target, recipe)
    loaded = load_model()
    assert loaded.trained, "the shipped model did not load as the default"
    items = [item for task in TASKS for item in generate_items(task, args.calibration_n, CALIBRATION_SEED, "heldout")]
    fitted_on = f"{args.calibration_n} heldout-split items per task, seed {CALIBRATION_SEED}"
    save_calibration(target, calibrate(loaded.model, loaded.tokenizer, items), fitted_on)
    loaded = load_model()
    started = time.perf_counter()
    report = evaluate_synthetic(loaded.model, loaded.tokenizer, n_per_task=args.n, calibration=loaded.calibration)
    report["seconds"] = round(time.perf_counter() - started, 1)
    (target / "eval.json").write_text(json.dumps(report, indent=1))
    train_report = evaluate_synthetic(loaded.model, loaded.tokenizer, n_per_task=args.n, split="train",
                                      task_options=recipe.task_options)  # fmt: skip
    card = model_card(recipe, stage_tokens(args.run, recipe), stage_wall_times(args.run, recipe),
                      final_losses(args.run), report, loaded.model.num_parameters(),
                      json.loads((target / "calibration.json").read_text()), train_report, starting_card,
                      args.recipe_name)  # fmt: skip
    (target / "MODEL_CARD.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
