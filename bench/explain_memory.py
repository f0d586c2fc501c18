"""Memory of a full `explain`: measured for SAGE pico / micro / small at several chain lengths, beside an analytic
estimate, and the estimate for `nano` against the paper's 4.3 GB budget (§6.4).

Measured: each (preset, chain length) runs in a fresh process — random weights, end-of-sequence off so the chain
has exactly the asked length — sampling its resident memory every 2 ms during `explain` (defaults: rollouts of 5
alternatives at up to 6 decision points, eq. 7 for every step, validation); reported is the peak minus the
resident memory before loading the model.
Estimated (bytes): weights + generation KV cache and tracking buffers + the largest transient of the analysis —
the batched backward pass of eq. 7's gradients (per row: activations of every layer, attention probabilities
included, over the prefix; as many rows as the engine puts in one pass), the batched rollouts' KV caches (the
chain's once, each row's own positions) and logits, validation's check of the rollouts (a copy of the prefix per
row, and logits), or the teacher-forced scoring pass's logits. The estimate is checked
against the measurements (ratio column), then applied to nano in bf16 and in 4-bit.

Run:  .venv/bin/python bench/explain_memory.py [--lengths 32,64,128] [--presets pico,micro,small] [--plot out.png]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import print_table, proc_status_bytes, record

PAPER_BUDGET_GB = 4.3
PROMPT_TOKENS = 24  # the measuring runs' question is about this long
FP32, BF16 = 4, 2
GRADIENT_MEMORY_MB = 256  # step_gradient_norms' default memory_mb
NANO_CHAIN, NANO_STEPS = 256, 16  # the nano estimate's chain: 256 tokens in steps of 16


def rss_mb() -> float:
    """This process's resident memory, MiB."""
    return proc_status_bytes("VmRSS") / 2**20


def measure(preset: str, length: int, batch: int) -> dict:
    """In this process: peak RSS growth (MiB) of loading `preset` and explaining a chain of `length` tokens, and the
    explain's wall time."""
    from sagenano.inverse import explain
    from sagenano.inverse.alternatives import rollout_batch
    from sagenano.loading import fresh_sage_model

    before = rss_mb()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    loaded = fresh_sage_model(preset)
    loaded.model.generation_config.eos_token_id = None
    start = time.perf_counter()
    budget = rollout_memory_mb(loaded.model, length, batch)
    report = explain(loaded.model, loaded.tokenizer, "A shop sells pens at 3 dollars each. How much do 4 pens cost?",
                     max_new_tokens=length, rollout_memory_mb=budget)  # fmt: skip
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return {"peak_mb": peak[0] - before, "seconds": seconds, "prompt": len(report.prompt_ids),
            "chain": len(report.tokens), "steps": len(report.steps), "decision_points": len(report.decision_points),
            "batch": rollout_batch(loaded.model, len(report.prompt_ids) + max(length, len(report.tokens)), budget),
            "rollouts": sum(len(d.alternatives) for d in report.decision_points)}  # fmt: skip


def estimate_bytes(
    preset: str, prompt: int, chain: int, steps: int, rollouts: int, batch: int, weight_bytes, act: int = FP32
) -> dict:
    """The analytic estimate's parts, in bytes, for one explain (rollouts generated `batch` at a time)."""
    from sagenano.config import SageConfig
    from sagenano.inverse.measure import ROWS_PER_PASS, backward_bytes_per_row
    from sagenano.model_info import build_on_meta
    from sagenano.quantize import estimated_int4_bytes

    config = SageConfig.from_name(preset)
    model = build_on_meta(preset)
    weights = (
        estimated_int4_bytes(model)
        if weight_bytes == "int4"
        else sum(p.numel() for p in model.parameters()) * weight_bytes
    )
    n = prompt + chain
    forward = config.num_hidden_layers  # generation, rollouts and the gradient passes run the forward stack only
    heads = config.num_attention_heads + config.num_concept_heads
    vocab = config.vocab_size
    kv_per_token = 2 * forward * config.num_attention_heads * config.head_dim * act
    generation = kv_per_token * n + chain * (forward * len(config.head_groups) * n + 16) * FP32  # cache + tracking
    # eq. 7's gradients: rows of the batched backward pass, as many as the engine's own rule puts together
    per_row = backward_bytes_per_row(config, n, chain, act)
    backward = per_row * min(steps, max(1, GRADIENT_MEMORY_MB * 2**20 // per_row))
    # the chain's keys and values once (shared-prefix attention), and each row's own positions and logits
    rollout = kv_per_token * n + min(rollouts, batch) * (kv_per_token * chain + vocab * FP32)
    # validation's rollout check: a teacher-forced pass of up to ROWS_PER_PASS rows, each with a copy of its prefix,
    # as many as the rollouts' memory bound holds (about the rollout batch)
    check = min(rollouts, ROWS_PER_PASS, batch) * (kv_per_token * n + chain * vocab * act)
    scoring = chain * vocab * FP32 * 3 + heads * n * n * act  # logits, log-softmax, top-k; one layer's attention
    return {"weights": weights, "generation+tracking": generation,
            "analysis peak": max(backward, rollout, check, scoring)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="32,64,128")
    parser.add_argument("--presets", default="pico,micro,small")
    parser.add_argument(
        "--batches", default="30,8", help="rollout batches (branches generated together) measured side by side"
    )
    parser.add_argument("--plot", type=Path, default=Path("runs/bench/explain_memory.png"))
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: "preset:length", run in a fresh process
    args = parser.parse_args()
    if args.measure:
        preset, length, batch = args.measure.split(":")
        print(json.dumps(measure(preset, int(length), int(batch))))
        return
    rows, points = [], []
    batches = [int(b) for b in args.batches.split(",")]
    for preset in args.presets.split(","):
        for length in map(int, args.lengths.split(",")):
            base = None
            for batch in batches:  # interleaved: the same configuration with each rollout batch in turn
                m = run_measure(preset, length, batch)
                base = base or m
                parts = estimate_bytes(preset, m["prompt"], m["chain"], m["steps"], m["rollouts"], batch, FP32)
                estimate = sum(parts.values()) / 2**20
                if batch == batches[-1]:
                    points.append((preset, m["chain"], m["peak_mb"], estimate))
                fit = f"{estimate / m['peak_mb']:.2f}" if m["peak_mb"] > 0 else "-"
                memory, seconds = m["peak_mb"] / base["peak_mb"], m["seconds"] / base["seconds"]
                if batch != batches[0]:
                    label = f"{preset}, {m['chain']} tokens: rollout_batch {batch} / {batches[0]}"
                    record("explain_memory", f"{label}: memory", round(memory, 3))
                    record("explain_memory", f"{label}: time", round(seconds, 3))
                record("explain_memory", f"{preset}, {m['chain']} tokens, batch {batch}: estimate / measured", fit)
                rows.append([preset, m["chain"], m["rollouts"], m["batch"], f"{m['peak_mb']:.0f}", f"{estimate:.0f}",
                             fit, f"{memory:.2f}", f"{seconds:.2f}"])  # fmt: skip
    print("explain memory: measured peak RSS growth (MiB) vs the analytic estimate, fp32, random weights; ratios "
          f"against rollout_batch {batches[0]}")  # fmt: skip
    print_table(["preset", "chain tokens", "rollouts", "rollout batch", "measured MiB", "estimate MiB",
                 "estimate / measured", "memory ratio", "time ratio"], rows)  # fmt: skip
    print(f"\nnano, prompt {PROMPT_TOKENS} + chain {NANO_CHAIN} tokens in {NANO_STEPS} steps, 30 rollouts (6 "
          f"decision points × 5), against the paper's {PAPER_BUDGET_GB} GB; explain's default rollout_memory_mb "
          f"gives nano batches of {nano_default_batch()}")  # fmt: skip
    nano_rows = []
    default = nano_default_batch()
    for label, weight_bytes, act in (("bf16", BF16, BF16), ("int4 (bf16 activations)", "int4", BF16)):
        for batch in [*batches, default]:
            parts = estimate_bytes("nano", PROMPT_TOKENS, NANO_CHAIN, NANO_STEPS, 30, batch, weight_bytes, act)
            total = sum(parts.values()) / 1e9
            record("explain_memory", f"nano {label}, rollout_batch {batch}: estimated GB", round(total, 2),
                   f"<= {PAPER_BUDGET_GB}", "PASS" if total <= PAPER_BUDGET_GB else "FAIL")  # fmt: skip
            nano_rows.append([label, batch, *(f"{v / 1e9:.2f}" for v in parts.values()), f"{total:.2f}",
                              "within" if total <= PAPER_BUDGET_GB else "over"])  # fmt: skip
    print_table(["nano weights", "rollout batch", "weights GB", "generation+tracking GB", "analysis peak GB",
                 "total GB", "budget"], nano_rows)  # fmt: skip
    plot(points, args.plot)


def rollout_memory_mb(model, length: int, batch: int) -> float:
    """The `rollout_memory_mb` that makes explain generate `batch` branches at a time for this chain length."""
    from sagenano.decoding import kv_cache_bytes_per_token

    row = kv_cache_bytes_per_token(model) * (length + PROMPT_TOKENS + 8)
    return (batch + 0.5) * row / 2**20


def nano_default_batch() -> int:
    """The rollout batch explain's default `rollout_memory_mb` gives nano (bf16 caches, 280-token chains)."""
    import torch

    from sagenano.inverse import ExplainOptions
    from sagenano.inverse.alternatives import rollout_batch
    from sagenano.model_info import build_on_meta

    model = build_on_meta("nano").to(torch.bfloat16)
    return rollout_batch(model, PROMPT_TOKENS + NANO_CHAIN, ExplainOptions().rollout_memory_mb)


def run_measure(preset: str, length: int, batch: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", f"{preset}:{length}:{batch}"], capture_output=True,
                         text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(points: list[tuple], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for preset in dict.fromkeys(p[0] for p in points):
        mine = [p for p in points if p[0] == preset]
        line = ax.plot([p[1] for p in mine], [p[2] for p in mine], "o-", label=f"{preset} measured")[0]
        ax.plot([p[1] for p in mine], [p[3] for p in mine], "--", color=line.get_color(), label=f"{preset} estimate")
    ax.set(xlabel="chain tokens", ylabel="peak memory growth (MiB)", yscale="log",
           title="Memory of a full explain by model size and chain length")  # fmt: skip
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


if __name__ == "__main__":
    main()
