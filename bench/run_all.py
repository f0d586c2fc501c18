"""The whole performance suite: runs every script under bench/ (quick sizes by default) and prints one table of
the ratios they measured, each side by side within its own run, and the machine it ran on.

Each script prints its own tables as it goes (kept in OUT/<script>.log) and appends its ratios to OUT/results.jsonl
(through `common.record`); this prints them together at the end and writes OUT/results.md.

Run:  make bench      or   .venv/bin/python bench/run_all.py [--full] [--only quantize,serve_load] [--out runs/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import RESULTS_ENV, print_table

HERE = Path(__file__).parent
# run → arguments for the quick pass (about 20 min on this 2-core machine); --full runs each with its defaults.
# A run is a script's name, or "script@variant" for the same script with other arguments.
QUICK = {
    "trace_overhead": ["--repeats", "3", "--new-tokens", "64"],
    "trace_overhead@long_prompt": ["--repeats", "3", "--new-tokens", "64", "--prompt-repeats", "12"],
    "generate_speed": ["--repeats", "3", "--new-tokens", "64"],
    "train_speed": ["--presets", "pico", "--steps", "3"],
    "explain_overhead": ["--questions", "3", "--repeats", "2"],
    "introspection": ["--n", "20", "--baselines", "attention,gradient"],
    "eq7_options": ["--n", "4"],
    "head_groups": ["--n", "8", "--permutations", "500"],
    "consistency": ["--n", "8"],
    "quantize": ["--n", "25", "--explain", "4", "--repeats", "3"],
    "peer_attribution": ["--questions", "2"],
    "explain_memory": ["--lengths", "32,128", "--presets", "pico,micro"],
    "serve_load": ["--clients", "4", "--seconds", "60"],
    "profile_explain": ["--questions", "4", "--top", "10"],
}


def script_of(run: str) -> str:
    """The script a run of the suite executes ("trace_overhead@long_prompt" → "trace_overhead")."""
    return run.split("@", 1)[0]


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        model = names[0] if names else model
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{model}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.system()} {platform.release()}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="each script at its own default sizes (hours)")
    parser.add_argument("--only", help="comma-separated scripts to run (default: all)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--append", action="store_true",
                        help="keep OUT's earlier results, replacing only those of the scripts run now")  # fmt: skip
    args = parser.parse_args()
    scripts = args.only.split(",") if args.only else list(QUICK)
    unknown = sorted(set(scripts) - set(QUICK))
    if unknown:
        parser.error(f"unknown scripts {unknown}; choose from {sorted(QUICK)}")
    helpers = {"common", "run_all", "explain_ab"}  # explain_ab compares two versions of the code: a tool for a change
    missing = sorted(p.stem for p in HERE.glob("*.py") if p.stem not in {*map(script_of, QUICK), *helpers})
    if missing:
        print(f"note: not in the suite yet: {missing}")
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    kept = []
    if args.append and results.is_file():
        ran = {script_of(name) for name in scripts}
        kept = [line for line in results.read_text().splitlines() if json.loads(line)["script"] not in ran]
    results.write_text("".join(f"{line}\n" for line in kept))
    env = {**os.environ, RESULTS_ENV: str(results.resolve()), "HF_HUB_OFFLINE": "1"}
    failures = []
    for name in scripts:
        if args.full and "@" in name:
            continue  # --full runs each script once, at its defaults
        command = [sys.executable, str(HERE / f"{script_of(name)}.py"), *([] if args.full else QUICK[name])]
        print(f"== {name} {' '.join(command[2:])}", flush=True)
        start = time.perf_counter()
        with open(args.out / f"{name}.log", "w") as log:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=HERE.parent).returncode
        print(f"   {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.perf_counter() - start:.0f} s; "
              f"log: {args.out / f'{name}.log'}", flush=True)  # fmt: skip
        if code:
            failures.append(name)
    summarize(results, args.out, failures)


def summarize(results: Path, out: Path, failures: list[str]) -> None:
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    table = [[r["script"], r["measure"], str(r["value"]), r["goal"], r["result"]] for r in rows]
    print(f"\nmachine: {machine()}")
    print_table(["script", "measure", "value", "goal", "result"], table)
    if failures:
        print(f"scripts that failed (see their logs): {failures}")
    header = ["| script | measure | value | goal | result |", "| --- | --- | --- | --- | --- |"]
    lines = [f"machine: {machine()}", "", *header]
    lines += [f"| {' | '.join(row)} |" for row in table]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
