"""Held-out accuracy and calibration of a model on the synthetic tasks; prints a table and writes JSON.

Usage: .venv/bin/python scripts/evaluate_synthetic.py [--model PATH] [--n 300] [--json out.json]
(default model: the one that ships with the package).

`--split train` scores fresh items of the training distribution instead (same seed, so not the items trained on);
`--task-options '{"logic": {"attribute_pool": "wide"}}'` gives the generators a recipe's task options.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sagenano.eval.task_accuracy import evaluate_synthetic
from sagenano.loading import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the shipped model)")
    parser.add_argument("--n", type=int, default=300, help="items per task (default 300)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--split", choices=["heldout", "train"], default="heldout")
    parser.add_argument("--task-options", type=json.loads, default=None, help="a recipe's task_options, as JSON")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    loaded = load_model(args.model)
    started = time.perf_counter()
    options = {"split": args.split, "task_options": args.task_options, "batch_size": args.batch_size}
    report = evaluate_synthetic(
        loaded.model, loaded.tokenizer, n_per_task=args.n, calibration=loaded.calibration, **options
    )
    report["model"] = loaded.source
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(f"model: {loaded.source}  ({args.split} split, seed {report['seed']}, {args.n} items per task)")
    print(f"{'task':<24} {'n':>5} {'exact match':>12}")
    for name, row in report["accuracy"].items():
        print(f"{name:<24} {row['n']:>5} {row['accuracy']:>12.1%}")
    for name, value in report["calibration"].items():
        print(f"{name}: {value:.3f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
