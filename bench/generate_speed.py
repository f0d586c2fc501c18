"""Generation speed of SAGE `pico` against a Llama of the same width, depth, heads and vocabulary.

Both run plain `model.generate` (greedy, default attention, end-of-sequence disabled so every run makes
exactly --new-tokens tokens per sequence) on the same prompt, repeated --batch times. One warm-up each,
then sage, llama, sage, llama, ... (--repeats rounds); tokens/s = batch × new tokens / wall time, the
median of each and their ratio. SAGE's inverse stack and meta-cognitive head do not run in generate().

Run:  .venv/bin/python bench/generate_speed.py [--batch 1] [--repeats 5] [--threads 1] [--device cpu]
Goal: SAGE tokens/s / Llama tokens/s >= 0.9.
"""

from __future__ import annotations

import time

import torch

from common import (
    build_models,
    common_parser,
    describe_sizes,
    encode,
    interleaved_times,
    median,
    plain_generate,
    print_table,
    ratio,
    record,
    setup,
    verdict,
)

GOAL = 0.9


def main() -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--batch", type=int, default=1, help="sequences generated together (default 1)")
    args = parser.parse_args()
    setup(args)

    started = time.perf_counter()
    models, tokenizer = build_models(["sage", "llama"], args.device, args.llama_match)
    inputs = encode(tokenizer, args.device, batch=args.batch)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, batch {args.batch}, greedy")
    print(f"{args.new_tokens} new tokens after a {inputs['input_ids'].shape[1]}-token prompt, repeats {args.repeats}")
    print(describe_sizes(models))
    fns = {n: (lambda m=m: plain_generate(m, tokenizer, inputs, args.new_tokens)) for n, m in models.items()}
    for name, fn in fns.items():
        shape = tuple(fn().shape)
        note = "" if shape == (args.batch, args.new_tokens) else " WARNING: not the asked size"
        print(f"{name}: generated {shape} (batch, tokens){note}")
    times = interleaved_times(fns, args.repeats, args.device)
    tokens = args.batch * args.new_tokens
    speed = {name: tokens / median(ts) for name, ts in times.items()}
    for name, ts in times.items():
        print(f"  {name:<6} times (s): " + " ".join(f"{t:.3f}" for t in ts))

    r = ratio(speed["sage"], speed["llama"])
    row = [str(args.batch), f"{speed['sage']:.1f}", f"{speed['llama']:.1f}", f"{r:.2f}", f">= {GOAL}"]
    row.append(verdict(r, GOAL, at_most=False))
    record("generate_speed", f"tokens/s SAGE pico / Llama, batch {args.batch}", round(r, 3), f">= {GOAL}", row[-1])
    print()
    print_table(["batch", "SAGE tokens/s", "Llama tokens/s", "SAGE/Llama", "goal", "result"], [row])
    print(f"tokens/s: {tokens} generated tokens / median wall time of one generate() call (prefill included)")
    print(f"total run time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
