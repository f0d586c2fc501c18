"""Fault injection into `sage-nano train`: a tiny three-stage run killed at random points (SIGTERM and SIGKILL), resumed
each time, must end with the same weights, bit for bit, as the same run left alone, and a clean run folder.

The recipe is pico shrunk to 64 wide and 2 layers, stages of 12 / 24 / 10 steps at batch 8 with a checkpoint every
4 steps and stage 3's synthesis (the recipe with which issue 29 found an unresumable stage-3 checkpoint). Each try
starts `sage-nano train` (with `--resume` once a checkpoint exists) and kills it after a random delay; after the
last kill the run is left to finish. Checked at the end: every weight equal to the straight run's (torch.equal),
no unfinished checkpoint write (`.*.tmp-*`, `.latest.*`) left, the metric rows (stage, step) those of the straight
run with none repeated.

Usage: .venv/bin/python bench/faults.py [--kills 12] [--seed 0] [--max-delay 12] [--out runs/faults]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from common import record

RECIPE = {
    "preset": "pico",
    "model": {"hidden_size": 64, "head_dim": 16, "head_groups": {"reasoning": 2, "memory": 1, "meta_cognitive": 1},
              "num_hidden_layers": 2, "num_inverse_layers": 1, "num_concepts": 8, "expert_intermediate_size": 32,
              "intermediate_size": 64, "max_position_embeddings": 256},
    "tasks": {"arithmetic": 256, "logic": 128}, "seed": 0, "max_length": 200, "bf16": False,
    "checkpoint_every": 4, "log_every": 1,
    "stages": [
        {"name": "base_lm", "steps": 12, "lr": 3e-3, "warmup": 2, "batch_size": 8},
        {"name": "cot", "steps": 24, "lr": 3e-3, "warmup": 2, "batch_size": 8},
        {"name": "inverse", "steps": 10, "lr": 1e-3, "warmup": 1, "batch_size": 8, "synth_questions": 6,
         "synth_resamples": 2, "synth_repeats": 2},
    ],
}  # fmt: skip
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def train(recipe: Path, run: Path) -> subprocess.Popen:
    resume = ["--resume"] if (run / "checkpoints" / "latest").is_file() else []
    command = [sys.executable, "-m", "sagenano.cli", "train", "--recipe", str(recipe), "--out", str(run), *resume]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def where(run: Path) -> str:
    latest = run / "checkpoints" / "latest"
    return latest.read_text().strip() if latest.is_file() else "no checkpoint"


def rows(run: Path) -> list[tuple[str, int]]:
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [(row["stage"], row["step"]) for row in map(json.loads, lines)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=12.0, help="longest wait before a kill (s)")
    parser.add_argument("--out", type=Path, default=Path("runs/faults"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    recipe = args.out / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    rng = random.Random(args.seed)

    start = time.perf_counter()
    straight = train(recipe, args.out / "straight")
    output = straight.communicate()[0]
    assert straight.returncode == 0, output
    print(f"straight run: {time.perf_counter() - start:.0f} s")

    run = args.out / "killed"
    for attempt in range(1, args.kills + 1):
        kind = rng.choice([signal.SIGTERM, signal.SIGKILL])
        delay = rng.uniform(0.5, args.max_delay)
        process = train(recipe, run)
        try:
            output = process.communicate(timeout=delay)[0]
            print(f"try {attempt}: finished before its {kind.name} at {delay:.1f} s (exit {process.returncode})")
            assert process.returncode == 0, output
            break
        except subprocess.TimeoutExpired:
            process.send_signal(kind)
            output = process.communicate()[0]
        # A SIGTERM before the trainer installs its handler (while Python imports) ends the process as SIGKILL would.
        print(f"try {attempt}: {kind.name} after {delay:.1f} s, exit {process.returncode}, at {where(run)}")
    while not (run / "model" / "model.safetensors").is_file():
        process = train(recipe, run)
        output = process.communicate()[0]
        assert process.returncode == 0, f"the resumed run failed:\n{output[-3000:]}"

    a, b = (
        load_file(args.out / "straight" / "model" / "model.safetensors"),
        load_file(run / "model" / "model.safetensors"),
    )
    different = sorted(name for name in a if not torch.equal(a[name], b[name]))
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    same_rows = rows(run) == rows(args.out / "straight")
    print(f"weights equal bit for bit: {not different} ({len(a)} tensors; different: {different[:5]})")
    print(f"unfinished writes left: {leftovers or 'none'}")
    print(f"metric rows as the straight run's, none repeated: {same_rows} ({len(rows(run))} rows)")
    ok = not different and not leftovers and same_rows
    record("faults", "killed run equals straight run", str(ok), "True", "PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
