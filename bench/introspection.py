"""Introspection accuracy of `sagenano.explain` on held-out ground-truth items, beside attribution baselines.

Prints the tables and goals of `sagenano.eval.introspection.measure_introspection`; `docs/introspection.md` defines
every part and metric: dependency tracking and faithfulness for eq. 7, attention-only, gradient-only and the
Figure-2 baselines (attention visualisation, gradient saliency, integrated gradients, LIME, SHAP) and the
interventional reference (leave-one-span-out ablation); alternative paths; decision points; calibration; and the
explanation time per method (seconds per explained step).

Goals: dependency top-1 >= 90 % (eq. 7); distractor-wins <= 5 % (eq. 7); alternatives >= 95 % verified;
answer ECE <= 0.05 after calibration; eq. 7 top-1 strictly above attention-only and gradient-only.

Run:  .venv/bin/python bench/introspection.py [--n 500] [--tasks arithmetic,logic] [--baselines attention,lime]
      [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from common import print_table, record
from sagenano.eval.baselines import BASELINES
from sagenano.eval.introspection import (
    STEP_SCORES,
    THRESHOLD,
    IntrospectionSettings,
    check_prompt_format,
    describe_projection,
    measure_introspection,
    part_counts,
)
from sagenano.eval.task_accuracy import EVAL_SEED, TASKS
from sagenano.inverse.calibration import ECE_BINS
from sagenano.loading import load_model

LABELS = {
    "eq7": "eq. 7",
    "attention_only": "attention-only (eq. 7)",
    "gradient_only": "gradient-only (eq. 7)",
    "attention": "attention visualisation",
    "gradient": "gradient saliency",
    "integrated_gradients": "integrated gradients",
    "lime": "LIME",
    "shap": "KernelSHAP",
    "ablation": "leave-one-span-out ablation",
}
DEFAULTS = IntrospectionSettings()


# ---------------------------------------------------------------------------------------------------
# Printing


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.3f}"


def plain(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def print_dependency(summaries: dict, methods: list[str]) -> None:
    print("\n1. Dependency tracking (gold chains; steps with >= 1 gold dependency)")
    rows = []
    for g, s in summaries.items():
        for m in methods:
            d = s["dependency"][m]
            rows.append([g, LABELS[m], d["steps"], pct(d["top1"]), pct(d["precision@3"]), pct(d["recall@3"]),
                         f"{pct(d['distractor_wins'])} ({d['distractor_steps']})"])  # fmt: skip
    print_table(["task", "ranking", "steps", "top-1", "precision@3", "recall@3", "distractor-wins (steps)"], rows)
    print("misaligned gold chains (skipped): " + ", ".join(f"{g} {s['misaligned']}" for g, s in summaries.items()))


def print_dependency_by_step(items: dict[str, list[dict]], methods: list[str]) -> None:
    """Top-1 per step index: where in the chain a ranking fails (the first step ranks only question spans)."""
    print("\ndependency top-1 by step index (steps)")
    rows = []
    for task, records in items.items():
        steps = [r for item in records for r in item.get("dependency", [])]
        indices = sorted({r["step"] for r in steps})
        for m in methods:
            cells = []
            for k in indices:
                hits = [r[m]["top1"] for r in steps if r["step"] == k]
                cells.append(f"{k}: {pct(sum(hits) / len(hits))} ({len(hits)})")
            rows.append([task, LABELS[m], "  ".join(cells)])
    print_table(["task", "ranking", "top-1 at step k (steps)"], rows)


def print_alternatives(summaries: dict, low_threshold: float) -> None:
    print("\n2. Alternative paths (own chains; alternative claims verified by a teacher-forced greedy re-check)")
    rows = []
    for g, s in summaries.items():
        for key, threshold in (("alternatives", THRESHOLD), ("alternatives_low", low_threshold)):
            a = s[key]
            rows.append([g, threshold, a["items"], a["decision_points"], a["alternatives"], a["verified"],
                         pct(a["verified_share"])])  # fmt: skip
    print_table(["task", "threshold", "items", "decision points", "alternatives", "verified", "verified share"], rows)


def print_decision(summaries: dict, resamples: int) -> None:
    print(f"\n3. Decision points (own chains; Spearman of step score vs |Δp(greedy answer)|, {resamples} samples "
          "per cut)")  # fmt: skip
    rows = []
    for g, s in summaries.items():
        d = s["decision"]
        rows.append([g, d["items"], d["skipped"], d["steps"], plain(d["mean_effect"]),
                     *(num(d["spearman"][score]) for score in STEP_SCORES)])  # fmt: skip
    print_table(["task", "items", "skipped (no answer)", "steps", "mean effect", "ρ entropy", "ρ meta", "ρ combined",
                 "ρ position (baseline)"], rows)  # fmt: skip


def print_calibration(summaries: dict, calibration: dict) -> None:
    print(f"\n4. Calibration (own chains; ECE, {ECE_BINS} bins)")
    rows = []
    for g, s in summaries.items():
        c = s["calibration"]
        rows.append([g, c["items"], c["answered"], pct(c["accuracy"]), plain(c["answer_ece_before"]),
                     plain(c["answer_ece_after"]), c["steps"], pct(c["step_accuracy"]), plain(c["step_ece_before"]),
                     plain(c["step_ece_after"])])  # fmt: skip
    print_table(["task", "items", "answered", "answer acc", "answer ECE before", "after", "steps", "step acc",
                 "step ECE before", "after"], rows)  # fmt: skip
    t_answer, t_step = calibration.get("answer_temperature"), calibration.get("step_temperature")
    curve = (
        f" and an isotonic curve of {calibration['answer_curve_points']} points"
        if calibration.get("answer_curve_points")
        else ""
    )
    print(f"answer calibration: temperature {plain(t_answer) if t_answer else 'none'}{curve} "
          f"({calibration.get('answer_temperature_source')}); step temperature: "
          f"{plain(t_step) if t_step else 'none (no calibration set: step ECE after is not available)'}; "
          f"calibration set: {calibration.get('n_items', 0)} items, {calibration.get('n_answered', 0)} answered, "
          f"{calibration.get('n_steps', 0)} steps, {calibration.get('seconds') or 0:.1f} s")  # fmt: skip


def print_faithfulness(summaries: dict, methods: list[str]) -> None:
    print("\n5. Faithfulness (gold chains; Δ step NLL in nats; comprehensiveness: higher is better, sufficiency: "
          "lower is better)")  # fmt: skip
    rows = []
    for g, s in summaries.items():
        f = s["faithfulness"]
        for m in methods:
            d = f[m]
            scores = ("comprehensiveness", "random_comprehensiveness", "sufficiency", "random_sufficiency")
            rows.append([g, LABELS[m], f["items"], f["steps"], plain(d["tokens"]), *(num(d[k]) for k in scores)])
    print_table(["task", "ranking", "items", "steps", "top-3 tokens", "comprehensiveness", "random", "sufficiency",
                 "random"], rows)  # fmt: skip


def print_times(summaries: dict) -> None:
    print("\n6. Explanation time per method (seconds per explained step; eq. 7: the gold chain's explain / its "
          "steps, attention-only and gradient-only come from the same call)")  # fmt: skip
    rows = []
    for g, s in summaries.items():
        timed = s["timings"]["methods"]
        engine = timed["eq7"]["seconds_per_step"]
        for m, t in timed.items():
            ratio = t["seconds_per_step"] / engine if engine and t["seconds_per_step"] is not None else None
            rows.append([g, LABELS[m], t["steps"], plain(t["seconds_per_step"]),
                         "n/a" if ratio is None else f"{ratio:.2f}×"])  # fmt: skip
    print_table(["task", "method", "steps", "seconds per step", "× eq. 7"], rows)


def print_goals(rows: list[dict]) -> None:
    print("\nGoals (overall)")
    shown = {"share": pct, "value": plain, "margin": lambda x: "n/a" if x is None else f"{100 * x:+.1f} pts"}
    table = [[row["goal"], shown[row["kind"]](row["measured"]), row["target"], row["result"]] for row in rows]
    for goal, measured, target, result in table:
        record("introspection", goal, measured, target, result)
    print_table(["goal", "measured", "target", "result"], table)


def print_document(document: dict, elapsed: float) -> None:
    summaries, methods, settings = document["summary"], document["methods"], document["settings"]
    print_dependency(summaries, methods)
    print_dependency_by_step(document["items"], methods)
    print_alternatives(summaries, settings["low_threshold"])
    print_decision(summaries, settings["resamples"])
    print_calibration(summaries, document["calibration"])
    print_faithfulness(summaries, methods)
    print_times(summaries)
    print_goals(document["goals"])
    n_items = summaries["overall"]["items"]
    parts = summaries["overall"]["timings"]["parts"]
    print(
        f"\n{n_items} items in {elapsed / 60:.1f} min ({elapsed / max(n_items, 1):.2f} s per item incl. loading "
        "and calibration); mean seconds per item and part: "
        + ", ".join(f"{p} {plain(v['seconds_per_item'])} ({v['items']} items)" for p, v in parts.items())
    )
    print("from all items: " + describe_projection(document["timings"]["projection"]))


# ---------------------------------------------------------------------------------------------------
# Running


def parse_baselines(text: str) -> tuple[str, ...]:
    """`--baselines`: a comma list of `BASELINES`, or "none"."""
    if text.strip().lower() == "none":
        return ()
    return tuple(b.strip() for b in text.split(",") if b.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--n", type=int, default=DEFAULTS.n, help="held-out items per task (default %(default)s)")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma list (default {','.join(TASKS)})")
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help=f"item seed (default EVAL_SEED = {EVAL_SEED})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--own-items",
        type=int,
        default=DEFAULTS.own_items,
        help="items per task whose own chain is explained: alternatives at threshold 0.3 and "
        "calibration (default %(default)s)",
    )
    parser.add_argument(
        "--decision-items",
        type=int,
        default=DEFAULTS.decision_items,
        help="items per task for decision points and the low-threshold alternatives (default %(default)s)",
    )
    parser.add_argument(
        "--faithfulness-items",
        type=int,
        default=DEFAULTS.faithfulness_items,
        help="items per task for faithfulness (default %(default)s)",
    )
    parser.add_argument(
        "--calibration-items",
        type=int,
        default=DEFAULTS.calibration_items,
        help="calibration items per task, seed --seed + 1000 (default %(default)s; 0: no fit)",
    )
    parser.add_argument(
        "--resamples", type=int, default=DEFAULTS.resamples, help="samples per cut of the chain (default %(default)s)"
    )
    parser.add_argument(
        "--low-threshold",
        type=float,
        default=DEFAULTS.low_threshold,
        help="second decision threshold (default %(default)s)",
    )
    parser.add_argument(
        "--baselines",
        default=",".join(BASELINES),
        help=f"Figure-2 baselines ranked beside eq. 7, comma list of {','.join(BASELINES)}, or none (default: all)",
    )
    parser.add_argument(
        "--baseline-samples",
        type=int,
        default=DEFAULTS.baseline_samples,
        help="LIME's and SHAP's perturbations per step (default %(default)s)",
    )
    parser.add_argument("--json", default=None, metavar="OUT", help="write every number (and each item's) here")
    args = parser.parse_args()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown tasks {unknown}; choose from {', '.join(TASKS)}")
    try:
        settings = IntrospectionSettings(
            n=args.n,
            own_items=args.own_items,
            decision_items=args.decision_items,
            faithfulness_items=args.faithfulness_items,
            calibration_items=args.calibration_items,
            resamples=args.resamples,
            seed=args.seed,
            low_threshold=args.low_threshold,
            baselines=parse_baselines(args.baselines),
            baseline_samples=args.baseline_samples,
        )
    except ValueError as error:  # names the bad value; the flags are the fields' names
        parser.error(str(error))
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    loaded = load_model(args.model)
    try:
        check_prompt_format(loaded.tokenizer)
    except ValueError as error:
        raise SystemExit(str(error)) from error
    settings = replace(settings, model_name=loaded.source)
    baselines = ", ".join(settings.baselines) or "none"
    print(f"model {loaded.source}; tasks {', '.join(tasks)}; seed {args.seed}; torch threads {args.threads}; "
          f"baselines {baselines} ({settings.baseline_samples} LIME/SHAP samples)")  # fmt: skip
    print("items per task: " + ", ".join(f"{p} {c}" for p, c in part_counts(settings).items())
          + f"; resamples {args.resamples}")  # fmt: skip
    document = measure_introspection(loaded.model, loaded.tokenizer, settings, tasks,
                                     loaded_calibration=loaded.calibration)  # fmt: skip
    elapsed = time.perf_counter() - started
    print_document(document, elapsed)
    if args.json:
        document = {"args": vars(args), "model": loaded.source, **document}
        document["timings"]["total_seconds_with_loading"] = elapsed
        with open(args.json, "w") as handle:
            json.dump(document, handle, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
