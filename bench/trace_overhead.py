"""Overhead of traced generation over plain `model.generate`: wall time and peak memory, traced / plain.

Same model, same prompt, same run: `sagenano.generation.trace_generate(..., attention="summary")` (greedy)
against `model.generate(..., do_sample=False)` run with the model's default attention (sdpa), as a user
would. trace_generate generates at that same attention and then reads the attention weights in one eager
replay pass over the chain, so that pass is part of what is measured. End-of-sequence is disabled so both
generate exactly --new-tokens tokens.

Models: SAGE `pico` (fresh) and a `LlamaForCausalLM` of the same width, depth, heads and vocabulary.
Time: one warm-up each, then plain, traced, plain, traced, ... (--repeats rounds); medians and their ratio.
Memory: each variant in its own fresh process (this script with --child): peak RSS of the whole process,
and the peak during the measured generation minus the RSS just before it (after loading and a short
warm-up). Read from /proc/self/status (Linux), not ru_maxrss, which a child inherits from its parent.
With --device cuda: torch.cuda.max_memory_allocated instead.

Run:  .venv/bin/python bench/trace_overhead.py [--repeats 5] [--threads 1] [--device cpu] [--models sage,llama]
      [--prompt-repeats K]  (the prompt K times over: a long prompt, whose keys and values the replay reads from
      generation's cache instead of recomputing them)
Goal: traced / plain <= 1.10 for time and for the whole process's peak memory. The growth during generation
is printed in MiB beside it, without a goal: plain generation's growth is a few pages, so a ratio to it
says nothing.
"""

from __future__ import annotations

import argparse
import json
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
    proc_status_bytes,
    ratio,
    record,
    setup,
    verdict,
)
from sagenano.generation import trace_generate

GOAL = 1.10
WARMUP_TOKENS = 4
VARIANTS = ("plain", "traced")
MIB = 1024 * 1024


def runner(
    variant: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, new_tokens: int, device: str,
    prompt: str = PROMPT,
) -> Callable[[], list[int]]:  # fmt: skip
    """A no-argument function that generates once and returns the generated ids."""
    if variant == "traced":
        return lambda: trace_generate(
            model, tokenizer, prompt, max_new_tokens=new_tokens, attention="summary"
        ).token_ids.tolist()
    inputs = encode(tokenizer, device, prompt)
    return lambda: plain_generate(model, tokenizer, inputs, new_tokens)[0].tolist()


# ---------------------------------------------------------------------------------------------------
# Memory: one fresh process per (model, variant)


def reset_peak_rss() -> bool:
    """Resets this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def prompt_of(args: argparse.Namespace) -> str:
    return " ".join([PROMPT] * max(1, args.prompt_repeats))


def child(args: argparse.Namespace) -> None:
    """Loads one model, warms up, generates once and prints its memory (bytes) as JSON.

    CPU: ru_maxrss is not used because a child started by a large process inherits that process's peak
    in it (Linux keeps the larger of the two across exec); /proc/self/status VmHWM is this process's own.
    """
    models, tokenizer = build_models([args.model], args.device, args.llama_match)
    model = models[args.model]
    runner(args.child, model, tokenizer, WARMUP_TOKENS, args.device, prompt_of(args))()
    run = runner(args.child, model, tokenizer, args.new_tokens, args.device, prompt_of(args))
    if args.device == "cuda":
        torch.cuda.synchronize()
        before = load_peak = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        tokens = len(run())
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        load_peak, before = proc_status_bytes("VmHWM"), proc_status_bytes("VmRSS")
        if load_peak is None or before is None or not reset_peak_rss():
            raise SystemExit("peak RSS needs Linux's /proc/self/status and /proc/self/clear_refs")
        tokens = len(run())
        peak = proc_status_bytes("VmHWM")
    print(json.dumps({"load_peak": load_peak, "before": before, "peak": peak, "tokens": tokens}))


def measure_memory(args: argparse.Namespace, model: str, variant: str) -> dict[str, int]:
    command = [sys.executable, __file__, "--child", variant, "--model", model]
    for flag in ("threads", "device", "new_tokens", "llama_match", "prompt_repeats"):
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
    parser.add_argument(
        "--prompt-repeats",
        type=int,
        default=1,
        help="the prompt repeated this many times, as a long few-shot prompt would be (default 1)",
    )
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
    prompt_tokens = len(tokenizer(prompt_of(args)).input_ids)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, prompt {prompt_tokens} tokens, "
          f"{args.new_tokens} new tokens, greedy")  # fmt: skip
    print(f"repeats {args.repeats} (interleaved plain/traced after one warm-up each)\n{describe_sizes(models)}")
    memory_unit = "CUDA allocated" if args.device == "cuda" else "RSS"
    rows = []
    for name, model in models.items():
        fns = {v: runner(v, model, tokenizer, args.new_tokens, args.device, prompt_of(args)) for v in VARIANTS}
        # A long prompt gets its own rows in the suite's table, beside the short prompt's.
        shown = f"{name}, {prompt_tokens}-token prompt" if args.prompt_repeats > 1 else name
        outputs = {v: fn() for v, fn in fns.items()}
        same = "identical" if outputs["plain"] == outputs["traced"] else "DIFFERENT"
        counts = ", ".join(f"{v} {len(ids)}" for v, ids in outputs.items())
        print(f"\n{name}: generated tokens: {counts}; token ids {same}")
        if any(len(ids) != args.new_tokens for ids in outputs.values()):
            print(f"  WARNING: not {args.new_tokens} tokens each, so the times compare different work")
        times = interleaved_times(fns, args.repeats, args.device)
        for v in VARIANTS:
            print(f"  {v:<6} times (s): " + " ".join(f"{t:.3f}" for t in times[v]))
        t_plain, t_traced = median(times["plain"]), median(times["traced"])
        mem = {v: measure_memory(args, name, v) for v in VARIANTS}
        for v, m in mem.items():
            print(
                f"  {v:<6} {memory_unit} (MiB): peak loading {m['load_peak'] / MIB:.1f}, just before "
                f"generating {m['before'] / MIB:.1f}, peak generating {m['peak'] / MIB:.1f} ({m['tokens']} tokens)"
            )
        peak = {v: max(m["load_peak"], m["peak"]) for v, m in mem.items()}
        grow = {v: m["peak"] - m["before"] for v, m in mem.items()}
        measures = (
            ("time, median (s)", t_plain, t_traced, 1),
            (f"peak {memory_unit}, whole process (MiB)", peak["plain"], peak["traced"], MIB),
        )
        for label, p, t, scale in measures:
            r = ratio(t, p)
            rows.append([shown, label, f"{p / scale:.3f}", f"{t / scale:.3f}", f"{r:.2f}", f"<= {GOAL}"])
            rows[-1].append(verdict(r, GOAL, at_most=True))
            record("trace_overhead", f"{shown}: {label.split(' (')[0]}, traced / plain", round(r, 3), f"<= {GOAL}",
                   rows[-1][-1])  # fmt: skip
        label = f"peak {memory_unit} growth in generation (MiB)"
        extra = (grow["traced"] - grow["plain"]) / MIB
        rows.append([shown, label, f"{grow['plain'] / MIB:.3f}", f"{grow['traced'] / MIB:.3f}", f"{extra:+.1f} MiB",
                     "", ""])  # fmt: skip
        record("trace_overhead", f"{shown}: {label.split(' (')[0]}, traced - plain (MiB)", round(extra, 1))

    print()
    print_table(["model", "measure", "plain", "traced", "traced/plain", "goal", "result"], rows)
    if args.device == "cuda":
        print("peak, whole process: torch.cuda.max_memory_allocated over the measured generation (weights included).")
        print("growth in generation: that peak minus what was allocated just before it: what generating needs.")
    else:
        print("peak RSS, whole process: VmHWM of a fresh process over loading, a short warm-up and the measured")
        print("  generation (Python, torch and the weights included): the memory a user's process needs.")
        print("peak RSS growth in generation: peak RSS during the measured generation (VmHWM reset just before it)")
        print("  minus RSS just before it: the memory generating itself needs on top of the loaded model (traced:")
        print("  the replay pass over the whole chain; plain: a few pages, as the warm-up left its buffers).")
    print(f"total run time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
