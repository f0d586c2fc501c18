"""Eq. 11 as the inverse stack meets it: does it reconstruct a step it cannot read?

For held-out items (a DEVELOPMENT seed, never the evaluation seed), the gold chain is read once per step with that
step hidden from the inverse stack (`hidden_step`): the KL from the forward distribution to the reconstruction
(nats per token of the hidden step) and how often the reconstruction's most likely token is the forward model's,
per task. Beside it, the same numbers for the reconstruction that reads every position (the inverse stack's plain
output through the LM head): what copying the step's own states gives, the loss eq. 11 measured before the step was
hidden.

Run:  .venv/bin/python bench/consistency.py [--n 40] [--model PATH] [--seed 4000001]
"""

from __future__ import annotations

import warnings
from collections import defaultdict

import torch

from common import development_parser, parse_development_args, print_table, record
from sagenano.data import generate_items
from sagenano.data.format import training_text
from sagenano.eval.task_accuracy import TASKS
from sagenano.loading import load_model
from sagenano.model import SageForCausalLM, step_ids_from_input_ids


@torch.no_grad()
def reconstruction(model: SageForCausalLM, ids: torch.Tensor, step: int) -> dict[str, tuple[float, float, int]]:
    """{"hidden" | "copied": (KL sum, top-1 agreements, tokens)} over the positions of `step` that predict a token."""
    out = model(ids, run_inverse=True, hidden_step=torch.tensor([step]))
    positions = out.reconstructed_positions[0, :-1]
    log_p = out.logits[0, :-1][positions].float().log_softmax(-1)
    results = {}
    for name, logits in (("hidden", out.reconstructed_logits), ("copied", model.lm_head(out.inverse_hidden_states))):
        log_q = logits[0, :-1][positions].float().log_softmax(-1)
        kl = float((log_p.exp() * (log_p - log_q)).sum())
        agree = int((log_p.argmax(-1) == log_q.argmax(-1)).sum())
        results[name] = (kl, agree, int(positions.sum()))
    return results


def main() -> None:
    parser = development_parser(__doc__, n=40)
    args = parse_development_args(parser)
    warnings.filterwarnings("ignore", category=UserWarning)
    loaded = load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    if not isinstance(model, SageForCausalLM) or model.inverse is None:
        parser.error("eq. 11 needs a SAGE model with its inverse stack")
    print(f"{args.n} held-out items per task (seed {args.seed}), {loaded.source}", flush=True)
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for task in TASKS:
        for item in generate_items(task, args.n, args.seed, "heldout"):
            ids = tokenizer(training_text(item), return_tensors="pt").input_ids
            steps = int(step_ids_from_input_ids(ids, model.config.step_separator_token_ids).max())
            for step in range(1, steps + 1):
                for name, values in reconstruction(model, ids, step).items():
                    sums[task, name] = [a + b for a, b in zip(sums[task, name], values, strict=True)]
    rows = []
    for task in TASKS:
        row = [task, f"{int(sums[task, 'hidden'][2]):,}"]
        for name in ("hidden", "copied"):
            kl, agree, tokens = sums[task, name]
            row += [f"{kl / tokens:.3f}", f"{agree / tokens:.1%}"]
            record("consistency", f"{name} step: KL per token, {task}", round(kl / tokens, 4))
            record("consistency", f"{name} step: top-1 agreement, {task}", round(agree / tokens, 3))
        rows.append(row)
    print_table(["task", "tokens", "KL, step hidden", "top-1, hidden", "KL, step read", "top-1, read"], rows)


if __name__ == "__main__":
    main()
