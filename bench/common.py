"""Helpers shared by the benchmark scripts: the two models, the prompt, plain generation and timing.

The benchmarks compare things measured side by side in one run (the machine is shared and noisy), so
every timing helper here interleaves its variants and reports medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from sagenano.config import SageConfig
from sagenano.loading import fresh_sage_model
from sagenano.tokenizer import load_tokenizer

MODELS = ("sage", "llama")
PROMPT = (
    "Question: A shop sells pens at 3 dollars each and notebooks at 5 dollars each. "
    "How much do 4 pens and 2 notebooks cost?\nStep 1:"
)


# ---------------------------------------------------------------------------------------------------
# Command line


def common_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: --repeats, --new-tokens, --threads, --device, --llama-match."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each variant, interleaved (default 5)")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per run (default 128)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads for every process (default 1: no fighting)"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the models run (default cpu)")
    parser.add_argument(
        "--llama-match",
        choices=["generation", "total"],
        default="generation",
        help="size the Llama's intermediate_size to match SAGE pico's parameters used in generation "
        "(forward stack + LM head, the default) or all of them (also the inverse stack and meta head, "
        "which generate() never runs)",
    )
    return parser


def development_parser(description: str, n: int) -> argparse.ArgumentParser:
    """The options of a measurement on development items: --n (items per task), --model, --seed."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=n, help=f"items per task (default {n})")
    parser.add_argument("--model", default=None, help="a model folder (default: the shipped model)")
    parser.add_argument("--seed", type=int, default=4_000_001, help="development seed of the held-out split")
    return parser


def parse_development_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The arguments, refusing the evaluation seed: defaults are chosen on other items than those reported."""
    from sagenano.eval.task_accuracy import EVAL_SEED

    args = parser.parse_args()
    if args.seed == EVAL_SEED:
        parser.error("that is the evaluation seed: measure on other items")
    return args


def setup(args: argparse.Namespace) -> None:
    """Fixes the thread count and checks the device; call first in every process."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False on this machine")
    torch.set_num_threads(args.threads)


# ---------------------------------------------------------------------------------------------------
# Models


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights are counted once


def generation_param_count(model: nn.Module) -> int:
    """Parameters that `generate()` uses: all but SAGE's inverse stack and meta-cognitive head."""
    unused = [getattr(model, name, None) for name in ("inverse", "meta_head")]
    return param_count(model) - sum(param_count(m) for m in unused if m is not None)


def llama_config(sage_config: SageConfig, intermediate_size: int) -> LlamaConfig:
    """A Llama of SAGE's width, depth, heads, vocabulary, context and tied embeddings."""
    c = sage_config
    return LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_attention_heads,
        head_dim=c.head_dim,
        intermediate_size=intermediate_size,
        max_position_embeddings=c.max_position_embeddings,
        rope_theta=c.rope_theta,
        tie_word_embeddings=c.tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=c.eos_token_id,
        pad_token_id=c.pad_token_id,
    )


def matching_intermediate_size(sage: PreTrainedModel, match: str) -> int:
    """The Llama intermediate_size whose parameter count comes closest to SAGE's (built on meta, linear in it)."""
    target = generation_param_count(sage) if match == "generation" else param_count(sage)
    with torch.device("meta"):
        p1, p2 = (param_count(LlamaForCausalLM(llama_config(sage.config, i))) for i in (1, 2))
    return max(1, round(1 + (target - p1) / (p2 - p1)))


def disable_eos(model: PreTrainedModel) -> None:
    """No end-of-sequence token, so every run generates exactly the tokens asked for."""
    model.generation_config.eos_token_id = None


def build_models(
    names: Sequence[str], device: str, match: str = "generation"
) -> tuple[dict[str, PreTrainedModel], PreTrainedTokenizerBase]:
    """SAGE `pico` (fresh, seed 0) and/or the matching Llama (seed 0), eval mode, eos off, on `device`."""
    models: dict[str, PreTrainedModel] = {}
    if "sage" in names:
        models["sage"] = fresh_sage_model("pico").model
    if "llama" in names:
        sage = models.get("sage")
        if sage is None:  # only its sizes are needed: build it without memory
            with torch.device("meta"):
                sage = fresh_sage_model("pico").model
        torch.manual_seed(0)
        config = llama_config(sage.config, matching_intermediate_size(sage, match))
        models["llama"] = LlamaForCausalLM(config).eval()
    for model in models.values():
        disable_eos(model)
        model.to(device)
    return models, load_tokenizer()


def describe_sizes(models: dict[str, PreTrainedModel]) -> str:
    lines = []
    for name, model in models.items():
        extra = f", intermediate_size {model.config.intermediate_size}" if name == "llama" else ""
        lines.append(
            f"  {name:<6} {param_count(model):>10,} parameters ({generation_param_count(model):,} used by "
            f"generate(){extra}), attention '{model.config._attn_implementation}'"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Generation and timing


def encode(
    tokenizer: PreTrainedTokenizerBase, device: str, prompt: str = PROMPT, batch: int = 1
) -> dict[str, torch.Tensor]:
    """The prompt tokenized as `trace_generate` does (no chat template: plain text), repeated `batch` times."""
    inputs = tokenizer([prompt] * batch, return_tensors="pt")
    return {k: inputs[k].to(device) for k in ("input_ids", "attention_mask")}


@torch.no_grad()
def plain_generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, inputs: dict[str, torch.Tensor], new_tokens: int
) -> torch.Tensor:
    """`model.generate`, greedy, as a user would call it; returns the (B, new) generated ids."""
    out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return out[:, inputs["input_ids"].shape[1] :]


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int, device: str) -> dict[str, list[float]]:
    """Wall seconds of each function: one untimed warm-up each, then `repeats` rounds of f1, f2, ... in turn."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def proc_status_bytes(key: str) -> int | None:
    """A VmHWM / VmRSS line of /proc/self/status in bytes (None off Linux)."""
    try:
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status)
    except OSError:
        return None
    return int(fields[key].split()[0]) * 1024


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(num: float, den: float) -> float:
    if den == 0:
        return 1.0 if num == 0 else float("inf")
    return num / den


def verdict(value: float, goal: float, at_most: bool) -> str:
    return "PASS" if (value <= goal if at_most else value >= goal) else "FAIL"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    print(line)
    for row in [headers, None, *rows]:
        print(line if row is None else "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(line)


# ---------------------------------------------------------------------------------------------------
# One table for the whole suite (bench/run_all.py)

RESULTS_ENV = "SAGENANO_BENCH_RESULTS"


def record(script: str, measure: str, value: float | str, goal: str = "", result: str = "") -> None:
    """Appends one measured ratio to the JSONL file named by $SAGENANO_BENCH_RESULTS, from which bench/run_all.py
    prints one table for the suite; does nothing when the variable is unset (a script run on its own)."""
    path = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            row = {"script": script, "measure": measure, "value": value, "goal": goal, "result": result}
            out.write(json.dumps(row) + "\n")
