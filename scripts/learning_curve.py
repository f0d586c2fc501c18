"""Held-out accuracy of every checkpoint of a run: the learning curve, measured.

Usage: .venv/bin/python scripts/learning_curve.py runs/pico [--n 50] [--json curve.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from transformers import AutoModelForCausalLM

import sagenano.model  # noqa: F401  (registers sage_nano)
from sagenano.eval.task_accuracy import evaluate_synthetic
from sagenano.tokenizer import load_tokenizer
from sagenano.train.batches import cumulative_tokens
from sagenano.train.checkpoint import verify_checkpoint
from sagenano.train.prepare import stage_data_path
from sagenano.train.recipe import Recipe

NAME = re.compile(r"stage(\d+)-step(\d+)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--n", type=int, default=50, help="held-out items per task for each checkpoint")
    parser.add_argument("--recipe", type=Path, default=None, help="the run's recipe (default: RUN/model/recipe.json)")
    parser.add_argument("--checkpoints", default="stage*-step*", help="which checkpoints (a glob, e.g. 'stage2-*')")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None, help="append the curve as a table to this file")
    parser.add_argument("--from-json", type=Path, default=None, help="only render a curve measured before")
    args = parser.parse_args()
    if args.from_json:
        rows = json.loads(args.from_json.read_text())
        if args.markdown:  # the n the curve was measured with (curves written before it was stored: --n)
            with args.markdown.open("a") as handle:
                handle.write(markdown_table(rows, rows[0].get("n_per_task", args.n)))
        return
    recipe = Recipe.load(args.recipe or args.run / "model" / "recipe.json")  # JSON is YAML too
    tokenizer = load_tokenizer()
    checkpoints = sorted(
        args.run.glob(f"checkpoints/{args.checkpoints}"), key=lambda p: tuple(map(int, NAME.search(p.name).groups()))
    )
    token_curves: dict[int, list[tuple[int, int]]] = {}
    rows = []
    for path in checkpoints:
        verify_checkpoint(path)
        stage_number, step = map(int, NAME.search(path.name).groups())
        stage = recipe.stages[stage_number - 1]
        if stage_number not in token_curves:
            data = stage_data_path(args.run, stage_number - 1, stage, recipe)
            token_curves[stage_number] = cumulative_tokens(data, tokenizer, stage.batch_size, stage.grad_accum,
                                                           stage.loss_on, recipe.seed + stage_number - 1,
                                                           recipe.max_length, stage.steps)  # fmt: skip
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        report = evaluate_synthetic(model, tokenizer, n_per_task=args.n)
        row = {"checkpoint": path.name, "stage": stage.name, "step": step, "n_per_task": args.n,
               "stage_tokens": token_curves[stage_number][step - 1][1],
               **{name: r["accuracy"] for name, r in report["accuracy"].items()}}  # fmt: skip
        rows.append(row)
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.markdown:
        with args.markdown.open("a") as handle:
            handle.write(markdown_table(rows, args.n))


# The held-out targets, applied to each task's whole accuracy (for arithmetic the 2-3-step target, the
# stricter one; the card's accuracy table has the buckets).
TARGETS = {"all arithmetic": 0.90, "all linear_equation": 0.90, "all logic": 0.85}


def extrapolate(rows: list[dict], stage: str = "cot") -> dict[str, dict]:
    """A straight line through accuracy against log(tokens) over `stage`'s second half, per task, and the
    tokens of that stage at which the line reaches the task's target (None when it does not rise).

    Accuracy cannot keep rising linearly in log(tokens), and inside one run the late checkpoints also gain from
    the decaying learning rate, so a token count reached this way is an optimistic guide, not a prediction."""
    points = [row for row in rows if row["stage"] == stage]
    points = points[len(points) // 2 :]
    if len(points) < 3:
        return {}
    log_tokens = np.log([row["stage_tokens"] for row in points])
    fits = {}
    for task, target in TARGETS.items():
        slope, intercept = np.polyfit(log_tokens, [row[task] for row in points], 1)
        with np.errstate(over="ignore"):
            needed = float(np.exp((target - intercept) / slope)) if slope > 0 else math.inf
        fits[task] = {"target": target, "per_doubling": float(slope * np.log(2)),
                      "tokens_for_target": needed if math.isfinite(needed) else None,
                      "seen": int(points[-1]["stage_tokens"]), "checkpoints": len(points)}  # fmt: skip
    return fits


def extrapolation_markdown(fits: dict[str, dict], stage: str = "cot") -> str:
    if not fits:
        return ""
    first = next(iter(fits.values()))
    lines = [
        "",
        f"### Extrapolated ({stage} stage, a line through accuracy against log tokens over its last "
        f"{first['checkpoints']} checkpoints)",
        "",
        "| task | target | points per doubling of tokens | stage tokens for the target | seen |",
        "|---|---|---|---|---|",
    ]
    for task, fit in fits.items():
        needed = fit["tokens_for_target"]
        shown = f"{needed:,.3g} ({needed / fit['seen']:,.3g}× seen)" if needed else "not rising"
        lines.append(f"| {task.removeprefix('all ')} | {fit['target']:.0%} | {100 * fit['per_doubling']:+.1f} | "
                     f"{shown} | {fit['seen']:,} |")  # fmt: skip
    lines.append("")
    lines.append("Noisy (few items per checkpoint), and optimistic: inside one run the later checkpoints also gain")
    lines.append("from the learning rate's decay, which a longer run spreads over more tokens. A guide for sizing the")
    lines.append("next run, not a prediction.")
    return "\n".join(lines) + "\n"


def markdown_table(rows: list[dict], n: int) -> str:
    """The curve as a markdown section: held-out exact match per task at every checkpoint."""
    tasks = sorted(k for k in rows[0] if k.startswith("all "))
    lines = [
        "",
        f"## Learning curve (held-out exact match, {n} items per task at each checkpoint)",
        "",
        f"Measured by `scripts/learning_curve.py`. One standard error of a share of {n} items is up to "
        f"{100 * math.sqrt(0.25 / n):.0f} points (at 50 %).",
        "",
        "| checkpoint | stage tokens seen | " + " | ".join(t.removeprefix("all ") for t in tasks) + " |",
        "|---|---|" + "---|" * len(tasks),
    ]
    for row in rows:
        cells = " | ".join(f"{row[t]:.0%}" for t in tasks)
        lines.append(f"| {row['checkpoint']} | {row['stage_tokens']:,} | {cells} |")
    return "\n".join(lines) + "\n" + extrapolation_markdown(extrapolate(rows))


if __name__ == "__main__":
    main()
