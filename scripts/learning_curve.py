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

from transformers import AutoModelForCausalLM

import sagenano.model  # noqa: F401  (registers sage_nano)
from sagenano.eval.synthetic import evaluate_synthetic
from sagenano.tokenizer import load_tokenizer
from sagenano.train.batches import cumulative_tokens
from sagenano.train.checkpoint import verify_checkpoint
from sagenano.train.recipe import Recipe

NAME = re.compile(r"stage(\d+)-step(\d+)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--n", type=int, default=50, help="held-out items per task for each checkpoint")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None, help="append the curve as a table to this file")
    parser.add_argument("--from-json", type=Path, default=None, help="only render a curve measured before")
    args = parser.parse_args()
    if args.from_json:
        rows = json.loads(args.from_json.read_text())
        if args.markdown:
            with args.markdown.open("a") as handle:
                handle.write(markdown_table(rows, args.n))
        return
    recipe = Recipe(**json.loads((args.run / "model" / "recipe.json").read_text()))
    tokenizer = load_tokenizer()
    checkpoints = sorted(
        args.run.glob("checkpoints/stage*-step*"), key=lambda p: tuple(map(int, NAME.search(p.name).groups()))
    )
    token_curves: dict[int, list[tuple[int, int]]] = {}
    rows = []
    for path in checkpoints:
        verify_checkpoint(path)
        stage_number, step = map(int, NAME.search(path.name).groups())
        stage = recipe.stages[stage_number - 1]
        if stage_number not in token_curves:
            data = (
                args.run / "data" / ("train.jsonl" if stage.name != "inverse" else f"stage{stage_number}-inverse.jsonl")
            )
            token_curves[stage_number] = cumulative_tokens(data, tokenizer, stage.batch_size, stage.grad_accum,
                                                           stage.loss_on, recipe.seed + stage_number - 1,
                                                           recipe.max_length, stage.steps)  # fmt: skip
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        report = evaluate_synthetic(model, tokenizer, n_per_task=args.n)
        row = {"checkpoint": path.name, "stage": stage.name, "step": step,
               "stage_tokens": token_curves[stage_number][step - 1][1],
               **{name: r["accuracy"] for name, r in report["accuracy"].items()}}  # fmt: skip
        rows.append(row)
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.markdown:
        with args.markdown.open("a") as handle:
            handle.write(markdown_table(rows, args.n))


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
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
