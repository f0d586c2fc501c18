"""Training speed of SAGE presets: tokens/s and model FLOP utilisation against this machine's matmul peak, beside a
same-size Llama trained by the same loop.

Measures, in one run: the peak matmul throughput of this machine in fp32 and bf16 (a large square matmul),
then full training steps (forward with the language-modelling loss, backward, AdamW) of SAGE `pico` and `micro`
and of a Llama of the same width, depth, heads and vocabulary whose MLP is sized to SAGE's generation parameters
(`common.matching_intermediate_size`), in fp32 and under bf16 autocast; SAGE and Llama steps alternate, so both see
the same machine load. MFU = achieved model FLOP/s / measured matmul peak of the same precision. Model FLOPs per
token: 6 × (parameters used in the forward stack) + 12 × layers × width × sequence length (the attention scores),
the usual estimate (PaLM, appendix B).

Usage: .venv/bin/python bench/train_speed.py [--presets pico,micro] [--batch 16] [--seq 128] [--steps 8]
Goals (issue 27): SAGE >= 0.8x Llama's tokens/s; MFU >= 30 % of the bf16 peak for micro.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import LlamaForCausalLM

from common import llama_config, matching_intermediate_size, record
from sagenano.loading import fresh_sage_model
from sagenano.model import SageForCausalLM


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a size × size matmul in `dtype`, best of `repeats`."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)
    best = min(_timed(lambda: torch.matmul(a, b)) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def forward_params(model: SageForCausalLM) -> int:
    """Parameters a training step of stages 1–2 runs through (not the inverse stack or meta head)."""
    skip = {id(p) for m in (model.inverse, model.meta_head) if m is not None for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def step_function(model, bf16: bool, batch: int, seq: int):
    """One training step of `model` on a fixed random batch (forward with the loss, backward, AdamW)."""
    torch.manual_seed(0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(6, model.config.vocab_size, (batch, seq))
    context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)

    def step() -> None:
        with context:
            loss = model(ids, labels=ids, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def sage_and_llama(preset: str) -> dict[str, torch.nn.Module]:
    sage = fresh_sage_model(preset).model  # sized to the package's tokenizer, seed 0
    torch.manual_seed(0)
    llama = LlamaForCausalLM(llama_config(sage.config, matching_intermediate_size(sage, "generation")))
    return {"sage": sage, "llama": llama}


def tokens_per_s(models: dict, bf16: bool, batch: int, seq: int, steps: int) -> dict[str, float]:
    """Median tokens/s of each model's training step, the models' steps alternating."""
    steps_of = {name: step_function(model, bf16, batch, seq) for name, model in models.items()}
    for step in steps_of.values():
        step()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(steps):
        for name, step in steps_of.items():
            times[name].append(_timed(step))
    return {name: batch * seq / statistics.median(t) for name, t in times.items()}


def flops_per_token(model, seq: int) -> int:
    config = model.config
    used = forward_params(model) if isinstance(model, SageForCausalLM) else sum(p.numel() for p in model.parameters())
    return 6 * used + 12 * config.num_hidden_layers * config.hidden_size * seq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="pico,micro")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per measurement (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"threads {torch.get_num_threads()}; matmul peak: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s (2048² matmul, best of 5)")  # fmt: skip
    print(f"{'model':<13} {'precision':<9} {'tokens/s':>9} {'GFLOP/s':>8} {'MFU':>6} {'SAGE/Llama':>10} "
          f"{'bf16/fp32':>9}")  # fmt: skip
    for preset in args.presets.split(","):
        models = sage_and_llama(preset)
        rates: dict[tuple[str, str], float] = {}
        for precision in ("fp32", "bf16"):
            measured = tokens_per_s(models, precision == "bf16", args.batch, args.seq, args.steps)
            for name, model in models.items():
                rate = rates[name, precision] = measured[name]
                mfu = rate * flops_per_token(model, args.seq) / peaks[precision]
                versus = f"{measured['sage'] / measured['llama']:.2f}" if name == "sage" else ""
                speedup = f"{rate / rates[name, 'fp32']:.2f}" if precision == "bf16" else ""
                record("train_speed", f"{preset} {name} {precision}: MFU", round(mfu, 4))
                if versus:
                    record("train_speed", f"{preset} {precision}: tokens/s SAGE / Llama", float(versus), ">= 0.8",
                           "PASS" if float(versus) >= 0.8 else "FAIL")  # fmt: skip
                label = f"{preset} {name}"
                print(f"{label:<13} {precision:<9} {rate:>9,.0f} {rate * flops_per_token(model, args.seq) / 1e9:>8.1f} "
                      f"{mfu:>6.1%} {versus:>10} {speedup:>9}")  # fmt: skip
    print("Goals: SAGE / Llama >= 0.8; micro's bf16 MFU >= 30 %.")


if __name__ == "__main__":
    main()
