"""Overhead of traced generation over plain `model.generate`: wall time and peak memory, traced / plain.

Same model, same prompt, same run: `sagenano.generation.trace_generate(..., attention="summary")` (greedy)
against `model.generate(..., do_sample=False)` run with the model's default attention (sdpa), as a user
would. trace_generate switches the model to eager attention to read the weights, so that cost is part
of what is measured. End-of-sequence is disabled so both generate exactly --new-tokens tokens.

Models: SAGE `pico` (fresh) and a `LlamaForCausalLM` of the same width, depth, heads and vocabulary.
Time: one warm-up each, then plain, traced, plain, traced, ... (--repeats rounds); medians and their ratio.
Memory: each variant in its own fresh process (this script with --child), measured after loading the
model and a short warm-up generation, and again after the measured generation.

Run:  .venv/bin/python bench/trace_overhead.py [--repeats 5] [--threads 1] [--device cpu] [--models sage,llama]
Goal: traced / plain <= 1.10 for time and for memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from common import (
    MODELS,
    PROMPT,
    build_models,
    common_parser,
    describe_sizes,
    encode,
    interleaved_times,
    median,
    plain_generate,
    print_table,
    ratio,
    setup,
    verdict,
)
from sagenano.generation import trace_generate

GOAL = 1.10
WARMUP_TOKENS = 4
VARIANTS = ("plain", "traced")
MIB = 1024 * 1024


def runner(
    variant: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, new_tokens: int, device: str
) -> Callable[[], list[int]]:
    """A no-argument function that generates once and returns the generated ids."""
    if variant == "traced":
        return lambda: trace_generate(
            model, tokenizer, PROMPT, max_new_tokens=new_tokens, attention="summary"
        ).token_ids.tolist()
    inputs = encode(tokenizer, device)
    return lambda: plain_generate(model, tokenizer, inputs, new_tokens)[0].tolist()


# ---------------------------------------------------------------------------------------------------
# Memory: one fresh process per (model, variant)


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def child(args: argparse.Namespace) -> None:
    """Loads one model, warms up, then prints {before, peak, tokens} of one generation as JSON."""
    models, tokenizer = build_models([args.model], args.device, args.llama_match)
    model = models[args.model]
    runner(args.child, model, tokenizer, WARMUP_TOKENS, args.device)()
    run = runner(args.child, model, tokenizer, args.new_tokens, args.device)
    if args.device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        tokens = len(run())
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        before = max_rss_bytes()
        tokens = len(run())
        peak = max_rss_bytes()
    print(json.dumps({"before": before, "peak": peak, "tokens": tokens}))


def measure_memory(args: argparse.Namespace, model: str, variant: str) -> dict[str, int]:
    command = [sys.executable, __file__, "--child", variant, "--model", model]
    for flag in ("threads", "device", "new_tokens", "llama_match"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"child {model}/{variant} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------
# The benchmark


def main() -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--models", default="sage,llama", help="comma-separated, from: sage, llama (default both)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    setup(args)
    if args.child:
        return child(args)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if unknown := set(names) - set(MODELS):
        parser.error(f"unknown model(s) {sorted(unknown)}; choose from {list(MODELS)}")

    started = time.perf_counter()
    models, tokenizer = build_models(names, args.device, args.llama_match)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {args.new_tokens} new tokens, greedy")
    print(f"repeats {args.repeats} (interleaved plain/traced after one warm-up each)\n{describe_sizes(models)}")
    memory_unit = "CUDA allocated" if args.device == "cuda" else "RSS"
    rows = []
    for name, model in models.items():
        fns = {v: runner(v, model, tokenizer, args.new_tokens, args.device) for v in VARIANTS}
        outputs = {v: fn() for v, fn in fns.items()}
        same = "identical" if outputs["plain"] == outputs["traced"] else "DIFFERENT (eager vs sdpa numerics?)"
        counts = ", ".join(f"{v} {len(ids)}" for v, ids in outputs.items())
        print(f"\n{name}: generated tokens: {counts}; token ids {same}")
        times = interleaved_times(fns, args.repeats, args.device)
        for v in VARIANTS:
            print(f"  {v:<6} times (s): " + " ".join(f"{t:.3f}" for t in times[v]))
        t_plain, t_traced = median(times["plain"]), median(times["traced"])
        mem = {v: measure_memory(args, name, v) for v in VARIANTS}
        for v in VARIANTS:
            m = mem[v]
            print(f"  {v:<6} {memory_unit}: before {m['before'] / MIB:.1f} MiB, peak {m['peak'] / MIB:.1f} MiB")
        peak = {v: mem[v]["peak"] for v in VARIANTS}
        grow = {v: mem[v]["peak"] - mem[v]["before"] for v in VARIANTS}
        measures = (
            ("time, median (s)", t_plain, t_traced, 1),
            (f"peak {memory_unit}, whole process (MiB)", peak["plain"], peak["traced"], MIB),
            (f"peak {memory_unit} growth in generation (MiB)", grow["plain"], grow["traced"], MIB),
        )
        for label, p, t, scale in measures:
            r = ratio(t, p)
            rows.append([name, label, f"{p / scale:.3f}", f"{t / scale:.3f}", f"{r:.2f}", f"<= {GOAL}"])
            rows[-1].append(verdict(r, GOAL, at_most=True))

    print()
    print_table(["model", "measure", "plain", "traced", "traced/plain", "goal", "result"], rows)
    if args.device == "cuda":
        print("peak CUDA allocated: torch.cuda.max_memory_allocated during the measured generation (weights included);")
        print("growth: that peak minus what was allocated just before it (what generating itself needs).")
    else:
        print("peak RSS, whole process: ru_maxrss of a fresh process after model load, a short warm-up and the")
        print("  measured generation; includes Python, torch and the weights, so it shows what a user's process needs.")
        print("peak RSS growth in generation: ru_maxrss after minus before the measured generation: how far the")
        print("  generation pushed the process's peak beyond load + warm-up. Small absolute values (allocator reuse,")
        print("  page granularity) make this ratio noisy; read it with the MiB numbers.")
    print(f"total run time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
