"""Do SAGE's head groups (reasoning / memory / meta-cognitive) specialise, or are they names?

Two measurements on held-out items drawn with a DEVELOPMENT seed (never the evaluation seed):

1. What each head attends to while it reads the gold chain: the entropy of its attention (over log of the keys it
   may see), and the share of its attention on the first token (a "sink"), on the rest of the question, on earlier
   steps and on the token's own step; averaged over the chain's tokens. Per group, and how much of the variation
   between the heads the group names explain (eta², the between-group share of the variance over all heads of all
   layers), with a permutation p-value (group names shuffled among the heads of each layer): if the names meant
   something, heads of one group would attend alike.
2. What each group does: how much the loss of the gold chain's tokens rises (nats per token, teacher-forced) when
   a group's heads are zeroed (their output, before W_O), in every layer and in each layer alone, per task; the
   concept heads likewise. Groups are the same size, so they control each other: a group that specialises costs its
   tasks a larger share of the damage than the others. (Zeroing any one group in every layer takes exact match to
   0 % on every task on the shipped pico, so exact match cannot tell them apart.)

Run:  .venv/bin/python bench/head_groups.py [--n 40] [--model PATH] [--seed 4000001]
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Iterator

import torch

from common import development_parser, parse_development_args, print_table, record
from sagenano.data import generate_items
from sagenano.data.format import training_text
from sagenano.eval.task_accuracy import TASKS
from sagenano.loading import load_model
from sagenano.model import SageForCausalLM, step_ids_from_input_ids

STATISTICS = ("entropy", "sink", "question", "earlier steps", "own step")


def head_slices(model: SageForCausalLM) -> dict[str, slice]:
    """The columns of W_O's input (per head × head_dim) that each group's heads write, concept heads included."""
    config, start, slices = model.config, 0, {}
    for name, size in config.head_groups.items():
        slices[name] = slice(start * config.head_dim, (start + size) * config.head_dim)
        start += size
    if config.active_concept_heads:
        slices["concept"] = slice(start * config.head_dim, (start + config.active_concept_heads) * config.head_dim)
    return slices


@contextlib.contextmanager
def heads_zeroed(model: SageForCausalLM, columns: slice, layer: int | None = None) -> Iterator[None]:
    """Within the block, the given heads write nothing in the forward stack's layer `layer` (None: every layer)."""

    def zero(module, args):
        (x,) = args
        x = x.clone()
        x[..., columns] = 0
        return (x,)

    chosen = model.model.layers if layer is None else [model.model.layers[layer]]
    handles = [block.attn.o_proj.register_forward_pre_hook(zero) for block in chosen]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


Chain = tuple[torch.Tensor, torch.Tensor]  # a gold chain's input ids (1, T) and each token's step index (T,)


def encode_chains(model: SageForCausalLM, tokenizer, items) -> dict[str, list[Chain]]:
    """The items' gold chains per task, tokenised once for every measurement that reads them."""
    chains: dict[str, list[Chain]] = {task: [] for task in TASKS}
    for item in items:
        ids = tokenizer(training_text(item), return_tensors="pt").input_ids
        chains[item.task].append((ids, step_ids_from_input_ids(ids, model.config.step_separator_token_ids)[0]))
    return chains


@torch.no_grad()
def head_statistics(model: SageForCausalLM, chains: list[Chain]) -> torch.Tensor:
    """(layers, heads, statistics) averaged over the chain tokens of every gold chain."""
    sums, count = None, 0
    for ids, steps in chains:
        attentions = torch.stack(model(ids, output_attentions=True).attentions)[:, 0]  # (L, H, T, T)
        queries = torch.nonzero(steps > 0).flatten()
        w = attentions[:, :, queries].float()  # (L, H, Q, T)
        visible = (queries + 1).float().clamp(min=2)
        entropy = -(w * w.clamp(min=1e-12).log()).sum(-1) / visible.log()
        key_step, query_step = steps[None, :], steps[queries][:, None]  # (1, T), (Q, 1)
        first = torch.zeros_like(key_step, dtype=torch.bool)
        first[0, 0] = True
        regions = [first, (key_step == 0) & ~first, (key_step > 0) & (key_step < query_step), key_step == query_step]
        shares = [(w * region.float()).sum(-1) for region in regions]
        per_item = torch.stack([entropy, *shares], -1).sum(2)  # (L, H, S)
        sums = per_item if sums is None else sums + per_item
        count += len(queries)
    return sums / count


def eta_squared(values: torch.Tensor, labels: list[int]) -> float:
    """Share of the variance of `values` (heads,) between the groups `labels` names."""
    groups = torch.tensor(labels)
    mean = values.mean()
    between = sum(((groups == g).sum() * (values[groups == g].mean() - mean) ** 2) for g in set(labels))
    total = ((values - mean) ** 2).sum()
    return float(between / total) if total > 0 else 0.0


def specialisation(stats: torch.Tensor, group_sizes: list[int], permutations: int, seed: int) -> list[tuple]:
    """Per statistic: eta² of the group names over all heads, and its permutation p-value."""
    layers, _heads, _ = stats.shape
    labels = [g for g, size in enumerate(group_sizes) for _ in range(size)]
    rng = random.Random(seed)
    rows = []
    for s, name in enumerate(STATISTICS):
        values = stats[:, :, s].flatten()
        observed = eta_squared(values, labels * layers)
        shuffled = [
            eta_squared(values, [g for _ in range(layers) for g in rng.sample(labels, len(labels))])
            for _ in range(permutations)
        ]
        p = (1 + sum(e >= observed for e in shuffled)) / (1 + permutations)
        rows.append((name, observed, p))
    return rows


@torch.no_grad()
def chain_loss(model: SageForCausalLM, chains: list[Chain]) -> float:
    """Mean negative log-likelihood of the chain tokens (steps and answer) of the gold chains."""
    total, count = 0.0, 0
    for ids, steps in chains:
        logits = model(ids).logits[0, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
        chain = steps[1:] > 0
        total += float(nll[chain].sum())
        count += int(chain.sum())
    return total / count


def main() -> None:
    parser = development_parser(__doc__, n=40)
    parser.add_argument("--permutations", type=int, default=2000, help="shuffles for the p-values (default 2000)")
    args = parse_development_args(parser)
    warnings.filterwarnings("ignore", category=UserWarning)
    loaded = load_model(args.model, attn_implementation="eager")
    model, tokenizer = loaded.model, loaded.tokenizer
    if not isinstance(model, SageForCausalLM):
        parser.error("head groups are SAGE's: pass a SAGE model")
    groups = model.config.head_groups
    items = [item for task in TASKS for item in generate_items(task, args.n, args.seed, "heldout")]
    print(f"{len(items)} held-out items (seed {args.seed}), {loaded.source}; groups {groups}", flush=True)

    by_task = encode_chains(model, tokenizer, items)
    stats = head_statistics(model, [chain for chains in by_task.values() for chain in chains])
    rows, start = [], 0
    for name, size in groups.items():
        mean = stats[:, start : start + size].mean((0, 1))
        rows.append([name, *(f"{v:.3f}" for v in mean.tolist())])
        start += size
    print("\nAttention of each group over the gold chains (mean over its heads in every layer):")
    print_table(["group", *STATISTICS], rows)
    print("\nHow much the group names explain the differences between heads (eta²; p: names shuffled within layers):")
    table = specialisation(stats, list(groups.values()), args.permutations, args.seed)
    print_table(["statistic", "eta²", "p"], [[name, f"{eta:.3f}", f"{p:.3f}"] for name, eta, p in table])
    for name, eta, p in table:
        record("head_groups", f"eta² of the group names, {name}", round(eta, 3), result=f"p={p:.3f}")

    print("\nRise of the gold chain's loss (nats per chain token) with heads zeroed:", flush=True)
    base = {task: chain_loss(model, chains) for task, chains in by_task.items()}
    layers = range(model.config.num_hidden_layers)
    loss_rows = [["none: loss", "", *(f"{base[t]:.3f}" for t in TASKS)]]
    for name, columns in head_slices(model).items():
        for where in ["all", *layers]:
            with heads_zeroed(model, columns, None if where == "all" else where):
                rise = {t: chain_loss(model, by_task[t]) - base[t] for t in TASKS}
            loss_rows.append([name, str(where), *(f"{rise[t]:+.3f}" for t in TASKS)])
            if where == "all":
                for task in TASKS:
                    record("head_groups", f"loss rise with the {name} heads zeroed, {task}", round(rise[task], 3))
    print_table(["heads zeroed", "layer", *TASKS], loss_rows)


if __name__ == "__main__":
    main()
