"""Training speed of SAGE presets: tokens/s and model FLOP utilisation against this machine's matmul peak.

Measures, in one run: the peak matmul throughput of this machine in fp32 and bf16 (a large square matmul),
then full training steps (forward with the curriculum's loss, backward, AdamW) of SAGE `pico` and `micro`
in fp32 and under bf16 autocast. MFU = achieved model FLOP/s / measured matmul peak of the same precision.
Model FLOPs per token: 6 × (parameters used in the forward stack) + 12 × layers × width × sequence length
(the attention scores), the usual estimate (PaLM, appendix B).

Usage: .venv/bin/python bench/train_speed.py [--presets pico,micro] [--batch 16] [--seq 128] [--steps 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import record
from sagenano.config import SageConfig
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


def train_tokens_per_s(preset: str, bf16: bool, batch: int, seq: int, steps: int) -> tuple[float, SageForCausalLM]:
    torch.manual_seed(0)
    model = SageForCausalLM(SageConfig.from_name(preset)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(6, model.config.vocab_size, (batch, seq))
    context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)

    def step() -> None:
        with context:
            loss = model(ids, labels=ids, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    times = [_timed(step) for _ in range(steps)]
    return batch * seq / statistics.median(times), model


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
    print(f"{'preset':<7} {'precision':<9} {'tokens/s':>9} {'GFLOP/s':>8} {'MFU':>6} {'bf16/fp32 speed':>16}")
    for preset in args.presets.split(","):
        rates = {}
        for precision in ("fp32", "bf16"):
            rate, model = train_tokens_per_s(preset, precision == "bf16", args.batch, args.seq, args.steps)
            config = model.config
            flops_per_token = 6 * forward_params(model) + 12 * config.num_hidden_layers * config.hidden_size * args.seq
            achieved = rate * flops_per_token
            rates[precision] = rate
            ratio = f"{rates['bf16'] / rates['fp32']:.2f}" if precision == "bf16" else ""
            record("train_speed", f"{preset} {precision}: MFU", round(achieved / peaks[precision], 4))
            if ratio:
                record("train_speed", f"{preset}: tokens/s bf16 / fp32", float(ratio))
            print(f"{preset:<7} {precision:<9} {rate:>9,.0f} {achieved / 1e9:>8.1f} "
                  f"{achieved / peaks[precision]:>6.1%} {ratio:>16}")  # fmt: skip


if __name__ == "__main__":
    main()
