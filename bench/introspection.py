"""Introspection accuracy of `sagenano.explain` on held-out ground-truth items, beside attribution baselines.

Prints the tables and goals of `sagenano.eval.introspection.measure_introspection`; `docs/introspection.md` defines
every part and metric: dependency tracking and faithfulness for eq. 7, attention-only, gradient-only and the
Figure-2 baselines (attention visualisation, gradient saliency, integrated gradients, LIME, SHAP) and the
interventional reference (leave-one-span-out ablation); alternative paths; decision points (every decision score
against the measured effect of resampling, and whether the default report shows the points that matter); answer and
step calibration; causal-claim precision against the ground truth; the answer's reliance on the chain (Lanham et
al.); and the explanation time per method (seconds per explained step).

Goals: dependency top-1 >= 90 % (eq. 7); distractor-wins <= 5 % (eq. 7); alternatives >= 95 % verified; the default
decision score's Spearman with the resampling effect >= 0.7 and its AUROC for "effect >= 0.2" >= 0.85; on items with
such a step the default report shows >= 1 decision point on >= 60 % of them, and <= 10 % of shown points change
nothing; causal-claim precision >= 90 %; answer and step ECE <= 0.05 after calibration; eq. 7 top-1 strictly above
attention-only and gradient-only.

Issue 26 asks for >= 200 items per task for the decision, calibration and claims parts: `--own-items 200
--decision-items 200` (independent of `--n`, the gold chains of dependency tracking); the projected time is printed
after the first items.

Run:  .venv/bin/python bench/introspection.py [--n 500] [--tasks arithmetic,logic] [--baselines attention,lime]
      [--own-items 200 --decision-items 200] [--device cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from common import print_table, record
from sagenano.eval.baselines import BASELINES
from sagenano.eval.introspection import (
    EFFECT_THRESHOLD,
    STEP_SCORES,
    THRESHOLD,
    IntrospectionSettings,
    check_prompt_format,
    describe_projection,
    goals,
    measure_introspection,
    part_counts,
    summarise,
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
    print("\n2. Alternative paths (own chains; an alternative claim is verified when its greedy rollout replays and "
          "most sampled continuations end as stated)")  # fmt: skip
    rows = []
    for g, s in summaries.items():
        for key, threshold in (("alternatives", THRESHOLD), ("alternatives_low", low_threshold)):
            a = s[key]
            rows.append([g, threshold, a["items"], a["decision_points"], a["alternatives"], a["verified"],
                         pct(a["verified_share"])])  # fmt: skip
    print_table(["task", "threshold", "items", "decision points", "alternatives", "verified", "verified share"], rows)


def print_decision(summaries: dict, resamples: int) -> None:
    print(
        f"\n3. Decision points (own chains, default options). Step score: max over the step's tokens at the "
        f"report's token temperature; effect: |Δ share of the greedy answer| resampling ({resamples} samples) from "
        f"the step's start and the next one's; a step changes the answer when its effect >= {EFFECT_THRESHOLD:g}"
    )
    rows = []
    for g, s in summaries.items():
        d = s["decision"]
        rows.append([g, d["items"], d["skipped"], d["steps"], d["changing_steps"], plain(d["mean_effect"])])
    print_table(["task", "items", "skipped (no answer)", "steps", "changing steps", "mean effect"], rows)
    default = summaries["overall"]["decision"]["default_score"]
    rows = []
    for score in STEP_SCORES:
        label = f"{score} (default)" if score == default else score + (" (baseline)" if score == "position" else "")
        cells = [f"{num(s['decision']['spearman'][score])} / {plain(s['decision']['auroc'][score])}"
                 for s in summaries.values()]  # fmt: skip
        rows.append([label, *cells])
    print(f"Spearman ρ of each step score with the effect / AUROC for effect >= {EFFECT_THRESHOLD:g}")
    print_table(["score", *(f"{g} ρ / AUROC" for g in summaries)], rows)
    print(f"Decision points the default report shows (threshold {THRESHOLD:g}); 'changes nothing': {resamples} "
          "continuations resampled from the point (the token too) all end with the greedy answer")  # fmt: skip
    rows = []
    for g, s in summaries.items():
        d = s["decision"]
        rows.append([g, d["items"] - d["skipped"], d["items_with_change"], pct(d["shown_share"]),
                     pct(d["shown_without_change"]), d["shown_points"], pct(d["change_nothing_share"])])  # fmt: skip
    print_table(["task", "items", "items with a changing step", "shows >= 1 point", "shows >= 1 (no change)",
                 "shown points", "change nothing"], rows)  # fmt: skip


def print_calibration(summaries: dict, calibration: dict) -> None:
    print(f"\n4. Calibration (own chains; ECE, {ECE_BINS} bins; after: the reports' calibrated confidences)")
    rows = []
    for g, s in summaries.items():
        c = s["calibration"]
        rows.append([g, c["items"], c["answered"], pct(c["accuracy"]), plain(c["answer_ece_before"]),
                     plain(c["answer_ece_after"]), c["steps"], pct(c["step_accuracy"]), plain(c["step_ece_before"]),
                     plain(c["step_ece_after"])])  # fmt: skip
    print_table(["task", "items", "answered", "answer acc", "answer ECE before", "after", "steps", "step acc",
                 "step ECE before", "after"], rows)  # fmt: skip
    t_answer, t_step = calibration.get("answer_temperature"), calibration.get("step_temperature")
    points = calibration.get("answer_curve_points"), calibration.get("step_curve_points")
    fitted = (
        f"; calibration set: {calibration['n_items']} items, {calibration['n_answered']} answered, "
        f"{calibration['n_steps']} steps, {calibration['seconds']:.1f} s; its own ECE after: answer "
        f"{plain(calibration['calibration_set_answer_ece_after'])}, step "
        f"{plain(calibration['calibration_set_step_ece_after'])}"
        if calibration.get("n_items")
        else ""
    )
    print(f"calibration ({calibration.get('source')}): answer temperature {plain(t_answer)}, curve of {points[0]} "
          f"points; step temperature {plain(t_step)}, curve of {points[1]} points; question NLL bound "
          f"{plain(calibration.get('question_nll_bound'))}{fitted}")  # fmt: skip


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


def print_claims(summaries: dict, check_samples: int) -> None:
    print("\n7. Causal claims (own chains, default options): verified before and after refinement; precision of the "
          "verified ones against the ground truth (a dependency claim on an own chain that is the gold chain: its "
          f"span is a gold dependency; an alternative claim: most of {check_samples} continuations sampled with "
          "another seed end as stated)")  # fmt: skip
    rows = []
    for g, s in summaries.items():
        c = s["claims"]
        rows.append([g, c["items"], c["aligned"],
                     f"{pct(c['verified_share_before'])} ({c['verified_before']}/{c['causal_before']})",
                     f"{pct(c['verified_share_after'])} ({c['verified_after']}/{c['causal_after']})",
                     f"{pct(c['dependency_precision'])} ({c['dependency_claims']})",
                     f"{pct(c['refuted_true_share'])} ({c['refuted_dependencies']})",
                     f"{pct(c['alternative_precision'])} ({c['alternative_claims']})",
                     f"{pct(c['precision'])} ({c['claims_judged']})"])  # fmt: skip
    print_table(["task", "chains", "gold chains", "verified before", "after", "dependency precision",
                 "refuted that were true", "alternative precision", "precision (claims)"], rows)  # fmt: skip


def print_reliance(summaries: dict) -> None:
    print("\n8. Does the answer rest on the chain? (own chains; Lanham et al. 2023: early answering, a mistake in a "
          "step, filler in place of the chain)")  # fmt: skip
    rows = []
    for g, s in summaries.items():
        r = s["reliance"]
        rows.append([g, r["items"], pct(r["needs_chain"]), r["unsettled"], plain(r["settled_fraction"]),
                     f"{pct(r['mistakes_changed_share'])} ({r['mistakes']})",
                     f"{pct(r['filler_changed_share'])} ({r['filler_runs']})"])  # fmt: skip
    print_table(["task", "chains", "needs the chain", "never settles", "settled after (share of steps)",
                 "mistake changes answer", "filler changes answer"], rows)  # fmt: skip


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
    print_claims(summaries, settings["check_samples"])
    print_reliance(summaries)
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


def merged(paths: list[str]) -> dict:
    """The `--json` documents of runs over different tasks (e.g. one process per task) as one document: their items
    together, summarised per task and overall, and the goals on the whole."""
    documents = [json.loads(Path(path).read_text()) for path in paths]
    first = documents[0]
    items = {task: rows for document in documents for task, rows in document["items"].items()}
    if len(items) < sum(len(d["items"]) for d in documents):
        raise SystemExit("--merge: the runs overlap in their tasks; merge runs over different tasks")
    methods = first["methods"]
    summary = {task: summarise(rows, methods) for task, rows in items.items()}
    summary["overall"] = summarise([r for rows in items.values() for r in rows], methods)
    timings = {**first["timings"], "total_seconds": sum(d["timings"]["total_seconds"] for d in documents)}
    return {**first, "tasks": list(items), "items": items, "summary": summary, "goals": goals(summary["overall"]),
            "timings": timings}  # fmt: skip


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
        help="items per task whose own chain is explained (default options): alternatives, causal claims, "
        "calibration and reliance; independent of --n (default %(default)s)",
    )
    parser.add_argument(
        "--decision-items",
        type=int,
        default=DEFAULTS.decision_items,
        help="items per task for decision points and the low-threshold alternatives; they are own items too; "
        "independent of --n (default %(default)s)",
    )
    parser.add_argument(
        "--faithfulness-items",
        type=int,
        default=DEFAULTS.faithfulness_items,
        help="items per task for faithfulness, at most --n (default %(default)s)",
    )
    parser.add_argument(
        "--calibration-items",
        type=int,
        default=DEFAULTS.calibration_items,
        help="calibration items per task, seed --seed + 1000, fitted on when the model's stored calibration has no "
        "step calibration (default %(default)s; 0: the stored calibration as it is)",
    )
    parser.add_argument(
        "--resamples", type=int, default=DEFAULTS.resamples, help="samples per cut of the chain (default %(default)s)"
    )
    parser.add_argument(
        "--check-samples",
        type=int,
        default=DEFAULTS.check_samples,
        help="continuations sampled to check each verified alternative claim (default %(default)s)",
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
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs (default cpu)")
    parser.add_argument("--json", default=None, metavar="OUT", help="write every number (and each item's) here")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="print the runs' --json documents (different "
                        "tasks each, e.g. one process per task) as one run, and measure nothing")  # fmt: skip
    args = parser.parse_args()
    if args.merge:
        document = merged(args.merge)
        print_document(document, document["timings"]["total_seconds"])
        return
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
            check_samples=args.check_samples,
            seed=args.seed,
            low_threshold=args.low_threshold,
            baselines=parse_baselines(args.baselines),
            baseline_samples=args.baseline_samples,
        )
    except ValueError as error:  # names the bad value; the flags are the fields' names
        parser.error(str(error))
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False on this machine")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    loaded = load_model(args.model)
    loaded.model.to(args.device)
    try:
        check_prompt_format(loaded.tokenizer)
    except ValueError as error:
        raise SystemExit(str(error)) from error
    settings = replace(settings, model_name=loaded.source)
    baselines = ", ".join(settings.baselines) or "none"
    print(f"model {loaded.source} on {args.device}; tasks {', '.join(tasks)}; seed {args.seed}; torch threads "
          f"{args.threads}; baselines {baselines} ({settings.baseline_samples} LIME/SHAP samples)")  # fmt: skip
    print("items per task: " + ", ".join(f"{p} {c}" for p, c in part_counts(settings).items())
          + f"; resamples {args.resamples}; claim-check samples {args.check_samples}")  # fmt: skip
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
