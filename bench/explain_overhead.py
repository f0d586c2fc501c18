"""Cost of a full `sagenano.explain` against plain generation of the same chain: time and peak memory.

Same model (the shipped SAGE model, or --model), same questions (held-out synthetic items), same run:
- plain:       `model.generate`, greedy, as a user would call it (it stops at end-of-sequence, like explain);
- explain:     `sagenano.explain(..., rollouts=False)`: traced generation, scoring, decision points,
               eq. 7 dependencies (one batched backward pass), claims and their validation by intervention;
- +rollouts:   the same with every candidate decision point's plausible alternatives (the default top 3) rolled
               out, and the decision and alternative claims tested by sampled continuations;
- +rollouts@t: the same at a lower decision threshold (--low-threshold), so rollouts happen even when the
               model is sure of itself at the default threshold 0.3. The table says how many decision
               points and rollouts each variant made per chain.
Time: one warm-up each, then the variants in turn (--repeats rounds); per-variant medians summed over the
questions, and their ratio to plain. Memory: each variant in a fresh process (this script with --child):
peak RSS during the measured work minus RSS just before it, and the whole process's peak.

Run:  .venv/bin/python bench/explain_overhead.py [--repeats 3] [--questions 4] [--model PATH]
Goals: explain / plain <= 1.5 (no rollouts) and <= 4 (with rollouts), both with the default options.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from common import interleaved_times, median, print_table, proc_status_bytes, ratio, record, verdict
from sagenano.data import generate_items
from sagenano.eval.task_accuracy import EVAL_SEED
from sagenano.inverse import explain
from sagenano.loading import load_model
from trace_overhead import reset_peak_rss

VARIANTS = ("plain", "explain", "+rollouts", "+rollouts@t")
GOALS = {"explain": 1.5, "+rollouts": 4.0, "+rollouts@t": 4.0}
MIB = 1024 * 1024
MAX_NEW_TOKENS = 160
TASKS = ("linear_equation", "arithmetic", "logic", "multiple_choice")


def questions(count: int) -> list[str]:
    """Held-out items, taken from the tasks in turn."""
    per_task = {task: generate_items(task, count, EVAL_SEED + 7, "heldout") for task in TASKS}
    return [per_task[TASKS[i % len(TASKS)]][i // len(TASKS)].question for i in range(count)]


def runner(variant: str, model, tokenizer, question: str, low_threshold: float, calibration=None):
    """A no-argument function doing one variant's work for one question; returns (decision points, rollouts)."""
    if variant == "plain":
        from sagenano.generation import render_prompt

        inputs = tokenizer(render_prompt(tokenizer, question, None), return_tensors="pt", add_special_tokens=False)

        def plain():
            model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            return 0, 0

        return plain
    options = {
        "rollouts": variant != "explain",
        "max_new_tokens": MAX_NEW_TOKENS,
        "calibration": calibration,  # as `sage-nano explain` runs it: with the model's stored calibration
    }
    if variant == "+rollouts@t":
        options["threshold"] = low_threshold

    def run():
        report = explain(model, tokenizer, question, **options)
        rolled = [*report.decision_points, *report.hesitations]  # every candidate is rolled out
        points = len(report.decision_points)
        return points, sum(len(d.alternatives) for d in rolled) if options["rollouts"] else 0

    return run


def child(args: argparse.Namespace) -> None:
    """One variant over all questions in a fresh process; prints its memory (bytes) as JSON."""
    loaded = load_model(args.model)
    items = questions(args.questions)
    runner(args.child, loaded.model, loaded.tokenizer, items[0], args.low_threshold, loaded.calibration)()  # warm-up
    fns = [runner(args.child, loaded.model, loaded.tokenizer, q, args.low_threshold, loaded.calibration) for q in items]
    before = proc_status_bytes("VmRSS")
    if before is None or not reset_peak_rss():
        raise SystemExit("peak RSS needs Linux's /proc/self/status and /proc/self/clear_refs")
    for fn in fns:
        fn()
    print(json.dumps({"before": before, "peak": proc_status_bytes("VmHWM")}))


def measure_memory(args: argparse.Namespace, variant: str) -> dict[str, int]:
    command = [sys.executable, __file__, "--child", variant, "--questions", str(args.questions),
               "--threads", str(args.threads), "--low-threshold", str(args.low_threshold)]  # fmt: skip
    if args.model:
        command += ["--model", args.model]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"child {variant} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--questions", type=int, default=4, help="held-out questions (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds, interleaved (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--low-threshold", type=float, default=0.05, help="threshold of +rollouts@t (default 0.05)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        return child(args)

    started = time.perf_counter()
    loaded = load_model(args.model)
    items = questions(args.questions)
    print(f"model {loaded.source}, {args.questions} held-out questions, torch threads {args.threads}, "
          f"repeats {args.repeats}, max {MAX_NEW_TOKENS} new tokens")  # fmt: skip
    totals = {v: 0.0 for v in VARIANTS}
    counts = {v: [0, 0] for v in VARIANTS}
    for question in items:
        fns = {
            v: runner(v, loaded.model, loaded.tokenizer, question, args.low_threshold, loaded.calibration)
            for v in VARIANTS
        }
        for v, fn in fns.items():
            points, rolled = fn()
            counts[v][0] += points
            counts[v][1] += rolled
        times = interleaved_times(fns, args.repeats, "cpu")
        for v in VARIANTS:
            totals[v] += median(times[v])
    memory = {v: measure_memory(args, v) for v in VARIANTS}
    rows = []
    for v in VARIANTS:
        grow = memory[v]["peak"] - memory[v]["before"]
        t_ratio = ratio(totals[v], totals["plain"])
        m_ratio = ratio(memory[v]["peak"], memory["plain"]["peak"])
        goal = GOALS.get(v)
        record("explain_overhead", f"{v}: time / plain generate", round(t_ratio, 3), f"<= {goal}" if goal else "",
               verdict(t_ratio, goal, at_most=True) if goal else "")  # fmt: skip
        record("explain_overhead", f"{v}: peak RSS / plain generate", round(m_ratio, 3))
        rows.append([
            v, f"{counts[v][0] / len(items):.1f}", f"{counts[v][1] / len(items):.1f}", f"{totals[v]:.3f}",
            f"{t_ratio:.2f}", f"{grow / MIB:.1f}", f"{memory[v]['peak'] / MIB:.1f}", f"{m_ratio:.2f}",
            f"<= {goal}" if goal else "", verdict(t_ratio, goal, at_most=True) if goal else "",
        ])  # fmt: skip
    print_table(
        ["variant", "decision pts/chain", "rollouts/chain", "time (s)", "time / plain", "RSS growth (MiB)",
         "peak RSS (MiB)", "peak / plain", "goal (time)", "result"],
        rows,
    )  # fmt: skip
    print("time: medians of the interleaved repeats, summed over the questions. RSS growth: peak during the work")
    print("minus RSS just before it, in a fresh process per variant; peak RSS: that process's whole peak.")
    print(f"total run time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
