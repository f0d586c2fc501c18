"""Which eq. 7 options rank a step's true dependencies first? A sweep on development items.

For each option set, every held-out item's GOLD chain is explained (`chain=`, no rollouts, no validation) and its
steps' span rankings are scored as `sagenano.eval.introspection` scores them: top-1 (the best-ranked span is a
true dependency) and distractor-wins (a distractor quantity outranks every true dependency), for eq. 7 and its
attention-only and gradient-only factors. Items come from the held-out split with a DEVELOPMENT seed (default
4000001), never the evaluation seed, so choosing defaults here does not tune on the evaluation items.

Run:  .venv/bin/python bench/eq7_options.py [--n 12] [--model PATH] [--seed 4000001] [--only "layer 2"]
"""

from __future__ import annotations

import warnings

from common import development_parser, parse_development_args, record
from sagenano.data import generate_items
from sagenano.eval.introspection import aligned, dependency_records, engine_rankings, gold_chain, share
from sagenano.eval.task_accuracy import TASKS
from sagenano.inverse import explain
from sagenano.loading import load_model

# Span aggregate first (embeddings, all heads), then the gradient layer and the attention heads (mean spans).
VARIANTS = {
    "embeddings, all heads, max": {"gradient_layer": 0, "attention_aggregate": "mean", "span_aggregate": "max"},
    "embeddings, all heads, mean": {"gradient_layer": 0, "attention_aggregate": "mean"},
    "embeddings, all heads, sum": {"gradient_layer": 0, "attention_aggregate": "mean", "span_aggregate": "sum"},
    "embeddings, last layer": {"gradient_layer": 0, "attention_aggregate": "last"},
    "embeddings, reasoning heads": {"gradient_layer": 0, "attention_aggregate": "group:reasoning"},
    "layer 1, all heads": {"gradient_layer": 1, "attention_aggregate": "mean"},
    "layer 1, reasoning heads": {"gradient_layer": 1, "attention_aggregate": "group:reasoning"},
    "layer 2, reasoning heads (default on pico)": {"gradient_layer": 2, "attention_aggregate": "group:reasoning"},
    "layer 2, all heads": {"gradient_layer": 2, "attention_aggregate": "mean"},
    "layer 2, memory heads": {"gradient_layer": 2, "attention_aggregate": "group:memory"},
    "layer 2, meta-cognitive heads": {"gradient_layer": 2, "attention_aggregate": "group:meta_cognitive"},
    "layer 3, reasoning heads": {"gradient_layer": 3, "attention_aggregate": "group:reasoning"},
}
METHODS = ("eq7", "attention_only", "gradient_only")


def sweep(loaded, items, options: dict) -> dict[str, tuple[float, float, int]]:
    """{method: (top-1, distractor-wins, steps)} over the items' aligned gold-chain steps."""
    records = []
    for item in items:
        report = explain(loaded.model, loaded.tokenizer, item.question, chain=gold_chain(item), rollouts=False,
                         validate=False, own_explanation=False, **options)  # fmt: skip
        if aligned(report, item):
            records += dependency_records(report, item, engine_rankings(report, item))
    return {
        m: (share([r[m]["top1"] for r in records]),
            share([r[m]["distractor_win"] for r in records if r[m]["distractor_win"] is not None]), len(records))
        for m in METHODS
    }  # fmt: skip


def main() -> None:
    parser = development_parser(__doc__, n=12)
    parser.add_argument("--only", default="", help="run only the option sets whose name holds this text")
    args = parse_development_args(parser)
    warnings.filterwarnings("ignore", category=UserWarning)
    loaded = load_model(args.model)
    items = [item for task in TASKS for item in generate_items(task, args.n, args.seed, "heldout")]
    print(f"{len(items)} held-out items (seed {args.seed}), {loaded.source}")
    print(f"{'options':36s} {'method':15s} {'steps':>5s} {'top-1':>7s} {'distractor-wins':>16s}")
    for name, options in VARIANTS.items():
        if args.only not in name:
            continue
        for method, (top1, wins, steps) in sweep(loaded, items, options).items():
            print(f"{name:36s} {method:15s} {steps:5d} {top1:7.1%} {wins:16.1%}", flush=True)
            if method == "eq7":
                record("eq7_options", f"{name}: dependency top-1 (development items)", round(top1, 3))


if __name__ == "__main__":
    main()
