"""Quantized against full precision, side by side in one run: the shipped model in fp32, bf16, 8-bit and 4-bit
(`sage-nano quantize`, optimum-quanto).

For each: weight bytes (every stored tensor, quantized ones by packed data + scales), resident memory growth of a
fresh process that loads the model, generates and explains once (ru_maxrss after − before loading), generation
tokens/s (greedy, interleaved repeats, median), held-out exact match on the synthetic tasks, and the explanation
consistency score (mean share of claims verified by intervention, before refinement, over held-out questions).
Ratios are against bf16. Then 4-bit / bf16 weight bytes for larger presets: pico, micro and small built with random
weights and quantized in memory, nano estimated from its layer shapes on the meta device (its weights would take
~12 GB here). Paper (§6.4): 4.3 GB → 0.6 GB, 14.3 → 31.2 tok/s, −2.2 points accuracy, −0.3 explanation quality.
Goal: 4-bit weights ≤ 0.30× bf16 with ≤ 2 points accuracy loss.

Run:  .venv/bin/python bench/quantize.py [--n 50] [--explain 10] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from common import interleaved_times, median, print_table, proc_status_bytes, record, verdict
from sagenano.data import generate_items
from sagenano.eval.task_accuracy import EVAL_SEED, evaluate_synthetic
from sagenano.inverse import explain
from sagenano.inverse.interact import first_score
from sagenano.loading import fresh_sage_model, load_model
from sagenano.model_info import build_on_meta
from sagenano.quantize import estimated_int4_bytes, quantize, quantize_model, weight_bytes

PROMPT = "<|question|>If 3x + 2 = 14, what is x?<|step|>"
TASKS = ("arithmetic", "linear_equation", "multiple_choice", "logic")


def variants(folder: Path) -> dict[str, str | None]:
    """name → --model argument; the quantized ones written by `quantize` into `folder`."""
    paths = {"fp32": None, "bf16": "bf16"}
    for bits in (8, 4):
        paths[f"int{bits}"] = str(quantize(load_model(None), bits, folder / f"int{bits}").out)
    return paths


def load(name: str, path: str | None):
    if name == "bf16":
        loaded = load_model(None, dtype=torch.bfloat16)
        loaded.model.to(torch.bfloat16)
        return loaded
    return load_model(path)


def rss_mb() -> float:
    """This process's resident memory, MiB."""
    return proc_status_bytes("VmRSS") / 2**20


def memory_growth_mb(name: str, path: str | None) -> float:
    """Resident memory growth of a fresh process that loads the variant, generates 64 tokens and explains once
    (after − before loading; peak RSS is no use here: importing the libraries peaks higher than a pico model)."""
    code = (
        "import sys; sys.path.insert(0, 'bench'); import quantize as q; before = q.rss_mb(); "
        f"loaded = q.load({name!r}, {path!r}); q.generate(loaded, 64); q.explain_once(loaded); "
        "print(q.rss_mb() - before)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1])  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


@torch.no_grad()
def generate(loaded, new_tokens: int) -> None:
    ids = loaded.tokenizer(PROMPT, return_tensors="pt", add_special_tokens=False).input_ids
    pad = loaded.tokenizer.pad_token_id
    loaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad)  # fmt: skip


def explain_once(loaded) -> None:
    explain(loaded.model, loaded.tokenizer, "If 3x + 2 = 14, what is x?", calibration=loaded.calibration)


def consistency(loaded, questions: list[str]) -> float:
    scores = []
    for question in questions:
        report = explain(loaded.model, loaded.tokenizer, question, calibration=loaded.calibration)
        scores.append(first_score(report.validation))
    return sum(scores) / len(scores)


def preset_ratios() -> list[list[str]]:
    """4-bit / bf16 weight bytes per preset: measured for pico/micro/small, estimated for nano."""
    rows = []
    for preset in ("pico", "micro", "small"):
        model = fresh_sage_model(preset).model.to(torch.bfloat16)
        bf16 = weight_bytes(model)
        quantized = quantize_model(model, 4)._wrapped
        rows.append([preset, f"{bf16 / 1e6:,.1f}", f"{weight_bytes(quantized) / 1e6:,.1f}",
                     f"{weight_bytes(quantized) / bf16:.3f}", "measured"])  # fmt: skip
    for row in rows:  # the shape-only estimate beside the real thing
        model = fresh_sage_model(row[0]).model
        row.append(f"estimate {estimated_int4_bytes(model) / 1e6:,.1f}")
    rows.append([*nano_estimate(), ""])
    return rows


def nano_estimate() -> list[str]:
    """nano's 4-bit weight bytes from its layer shapes on the meta device (`estimated_int4_bytes`)."""
    model = build_on_meta("nano")
    bf16 = sum(p.numel() for p in model.parameters()) * 2
    int4 = estimated_int4_bytes(model)
    return ["nano", f"{bf16 / 1e6:,.0f}", f"{int4 / 1e6:,.0f}", f"{int4 / bf16:.3f}", "estimated"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50, help="held-out items per task for accuracy (default 50)")
    parser.add_argument("--explain", type=int, default=10, help="held-out questions explained for consistency")
    parser.add_argument("--repeats", type=int, default=5, help="timed generations per variant, interleaved")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="sagenano-quantize-"))
    paths = variants(folder)
    loaded = {name: load(name, path) for name, path in paths.items()}
    times = interleaved_times({name: (lambda m=m: generate(m, args.new_tokens)) for name, m in loaded.items()},
                              args.repeats, "cpu")  # fmt: skip
    questions = [item.question for task in TASKS for item in generate_items(task, args.explain, EVAL_SEED + 1,
                                                                              "heldout")][: args.explain]  # fmt: skip
    results = {}
    for name, model in loaded.items():
        accuracy = evaluate_synthetic(model.model, model.tokenizer, n_per_task=args.n, tasks=TASKS)["overall_accuracy"]
        results[name] = {
            "weight_bytes": weight_bytes(model.model),
            "memory_growth_mb": memory_growth_mb(name, paths[name]),
            "tokens_per_s": args.new_tokens / median(times[name]),
            "accuracy": accuracy,
            "consistency": consistency(model, questions),
        }
    presets = preset_ratios()
    report(results, presets, args)
    if args.json:
        args.json.write_text(json.dumps({"variants": results, "presets": presets}, indent=2))


def report(results: dict, presets: list[list[str]], args: argparse.Namespace) -> None:
    base = results["bf16"]
    rows = []
    for name, r in results.items():
        rows.append([name, f"{r['weight_bytes'] / 1e6:.2f}", f"{r['weight_bytes'] / base['weight_bytes']:.3f}",
                     f"{r['memory_growth_mb']:.0f}", f"{r['memory_growth_mb'] / base['memory_growth_mb']:.2f}",
                     f"{r['tokens_per_s']:.1f}", f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}",
                     f"{100 * r['accuracy']:.1f}", f"{100 * (r['accuracy'] - base['accuracy']):+.1f}",
                     f"{r['consistency']:.3f}", f"{r['consistency'] - base['consistency']:+.3f}"])  # fmt: skip
    print(f"shipped model; {args.n} held-out items per task ({len(TASKS)} tasks), {args.explain} explained; "
          f"{args.threads} thread(s); ratios and differences against bf16")  # fmt: skip
    print_table(["variant", "weights MB", "× bf16", "RSS growth MB", "× bf16", "tok/s", "× bf16", "accuracy %",
                 "Δ points", "consistency", "Δ"], rows)  # fmt: skip
    print(
        "\n4-bit / bf16 weight bytes by preset (SAGE; the LM head is tied to the embeddings up to small, untied "
        "in nano)"
    )
    print_table(["preset", "bf16 MB", "int4 MB", "ratio", "", "int4 MB from shapes"], presets)
    int4 = results["int4"]
    size_ratio = int4["weight_bytes"] / base["weight_bytes"]
    loss = 100 * (base["accuracy"] - int4["accuracy"])
    for name in ("fp32", "int8", "int4"):
        r = results[name]
        record("quantize", f"{name} / bf16: tokens/s", round(r["tokens_per_s"] / base["tokens_per_s"], 3))
        record(
            "quantize", f"{name} - bf16: held-out accuracy (points)", round(100 * (r["accuracy"] - base["accuracy"]), 1)
        )
        record("quantize", f"{name} - bf16: consistency score", round(r["consistency"] - base["consistency"], 3))
    record("quantize", "int4 / bf16: weight bytes (shipped pico)", round(size_ratio, 3), "<= 0.30",
           verdict(size_ratio, 0.30, True))  # fmt: skip
    record("quantize", "int4 / bf16: weight bytes (nano, from shapes)", float(presets[-1][3]), "<= 0.30",
           verdict(float(presets[-1][3]), 0.30, True))  # fmt: skip
    record("quantize", "bf16 - int4: accuracy loss (points)", round(loss, 1), "<= 2", verdict(loss, 2.0, True))
    print(f"\ngoal 4-bit weights <= 0.30x bf16 (shipped pico): {size_ratio:.3f} {verdict(size_ratio, 0.30, True)}; "
          f"nano estimate {presets[-1][3]}")  # fmt: skip
    print(f"goal accuracy loss <= 2 points (shipped pico): {loss:+.1f} {verdict(loss, 2.0, True)}")


if __name__ == "__main__":
    main()
