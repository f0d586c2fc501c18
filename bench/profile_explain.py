"""Where a full `explain` spends its time: the engine's own phase timings, and cProfile's top functions.

Explains held-out questions with the shipped model (defaults: rollouts, eq. 7 for every step, validation), sums
`report.timings` per phase (share of the total), then profiles the same work under cProfile and prints the
functions with the most cumulative and the most own time. Use it before and after an optimisation.

Run:  .venv/bin/python bench/profile_explain.py [--questions 6] [--top 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
from collections import defaultdict

import torch

from common import print_table, record
from sagenano.data import generate_items
from sagenano.eval.task_accuracy import EVAL_SEED, TASKS
from sagenano.inverse import explain
from sagenano.loading import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=6)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model()
    items = [i for task in TASKS for i in generate_items(task, args.questions, EVAL_SEED + 3, "heldout")]
    questions = [item.question for item in items][: args.questions]

    def work() -> dict[str, float]:
        phases: dict[str, float] = defaultdict(float)
        for question in questions:
            report = explain(loaded.model, loaded.tokenizer, question, calibration=loaded.calibration)
            for phase, seconds in report.timings.items():
                phases[phase] += seconds
        return phases

    work()  # warm-up
    profiler = cProfile.Profile()
    profiler.enable()
    phases = work()
    profiler.disable()
    total = sum(phases.values())
    print(f"{len(questions)} questions, {total:.2f} s in explain's phases (under cProfile)")
    rows = [[p, f"{s:.3f}", f"{s / total:.1%}"] for p, s in sorted(phases.items(), key=lambda kv: -kv[1])]
    print_table(["phase", "seconds", "share"], rows)
    for phase, seconds in phases.items():
        record("profile_explain", f"share of explain time: {phase}", round(seconds / total, 3))
    stats = pstats.Stats(profiler)
    for key, title in (("cumulative", "most cumulative time"), ("tottime", "most own time")):
        print(f"\nfunctions with the {title}")
        stats.sort_stats(key).print_stats(args.top)


if __name__ == "__main__":
    main()
