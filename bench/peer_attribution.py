"""The engine against peers, same model and chain: time to attribute the whole chain, and rank agreement.

For each held-out question the shipped model's own greedy chain is attributed by
- ours: `sagenano.explain(chain=…, rollouts=False)` — the whole engine (decision points, eq. 7 dependencies for
  every step, claims and their validation by intervention), not only attribution;
- inseq 0.7.1 integrated gradients (50 steps) and saliency, attributing every generated token to every earlier
  position (`model.attribute(prompt, prompt + chain)`);
- Captum 0.9 `LLMGradientAttribution(LayerIntegratedGradients(embeddings))`, every chain token to the prompt.
Agreement: for each step, the peer's attribution magnitudes (L2 over the hidden size, summed over the step's
tokens, mean over each span's tokens) against our eq. 7 significance over the same spans (the question's and the
earlier steps'; Captum's prompt-only attribution: the question's), Spearman's rho, median over steps.
Goal: ours ≥ 10× faster than inseq integrated gradients.

Run:  .venv/bin/python bench/peer_attribution.py [--questions 4] [--threads 1]
Needs the bench extras: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from common import print_table, record, verdict
from sagenano.data import generate_items
from sagenano.eval.baselines import rank_agreement
from sagenano.eval.task_accuracy import EVAL_SEED
from sagenano.inverse import Report, explain
from sagenano.loading import load_model

GOAL = 10.0
TASKS = ("arithmetic", "linear_equation", "logic")


def questions(n: int) -> list[str]:
    items = [item for task in TASKS for item in generate_items(task, n, EVAL_SEED + 2, "heldout")]
    return [item.question for item in items][:n]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def inseq_matrix(inseq_model, report: Report) -> torch.Tensor:
    """(N, T): attribution magnitude of every position for every generated token, aligned with the report."""
    prompt = report.prompt
    out = inseq_model.attribute(prompt, prompt + report.chain, show_progress=False)
    attribution = out.sequence_attributions[0]
    ids = [t.id for t in attribution.target]
    ours = report.prompt_ids + [t.id for t in report.tokens]
    if ids != ours[: len(ids)]:
        raise RuntimeError("inseq tokenised the chain differently from the report; cannot align positions")
    scores = attribution.target_attributions.float()  # (N, T, hidden)
    return scores.norm(dim=-1).nan_to_num(0.0)


def captum_matrix(model, tokenizer, report: Report) -> torch.Tensor:
    """(P, T): Captum's LLMGradientAttribution of every chain token to the prompt tokens."""
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

    attribution = LLMGradientAttribution(LayerIntegratedGradients(model, model.get_input_embeddings()), tokenizer)
    inputs = TextTokenInput(report.prompt, tokenizer)
    result = attribution.attribute(inputs, target=report.chain)
    matrix = result.token_attr.float().abs().T  # (P, T')
    if matrix.shape[1] > len(report.tokens) or matrix.shape[0] != len(report.prompt_ids):
        raise RuntimeError("Captum tokenised the prompt or chain differently from the report; cannot align them")
    return matrix


def agreement(report: Report, matrix: torch.Tensor, question_only: bool) -> float:
    """Median over steps of Spearman's rho between our span significances and the peer's span scores."""
    rhos = []
    for step in report.steps:
        columns = [t for t in range(step.token_start, step.token_end) if t < matrix.shape[1]]
        if not columns or not step.dependencies:
            continue
        per_position = matrix[:, columns].sum(1)
        deps = [d for d in step.dependencies if not question_only or d.span.source == "question"]
        deps = [d for d in deps if max(d.span.positions) < len(per_position)]
        theirs = [float(per_position[d.span.positions].mean()) for d in deps]
        rho = rank_agreement([d.significance for d in deps], theirs)
        if not math.isnan(rho):
            rhos.append(rho)
    return statistics.median(rhos) if rhos else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import inseq

    loaded = load_model()
    model, tokenizer = loaded.model, loaded.tokenizer
    model.config.bos_token_id = tokenizer.eos_token_id  # inseq reads it; SAGE's tokenizer has no BOS token
    peers = {"inseq IG": inseq.load_model(model, "integrated_gradients", tokenizer=tokenizer),
             "inseq saliency": inseq.load_model(model, "saliency", tokenizer=tokenizer)}  # fmt: skip
    seconds = {"ours": 0.0, "inseq IG": 0.0, "inseq saliency": 0.0, "Captum LLM IG": 0.0}
    rhos: dict[str, list[float]] = {name: [] for name in seconds if name != "ours"}
    tokens = 0
    for question in questions(args.questions):
        chain = explain(model, tokenizer, question, rollouts=False, validate=False).chain
        report, spent = timed(lambda q=question, c=chain: explain(model, tokenizer, q, chain=c, rollouts=False))
        seconds["ours"] += spent
        tokens += len(report.tokens)
        for name, peer in peers.items():
            matrix, spent = timed(lambda p=peer, r=report: inseq_matrix(p, r))
            seconds[name] += spent
            rhos[name].append(agreement(report, matrix, question_only=False))
        matrix, spent = timed(lambda r=report: captum_matrix(model, tokenizer, r))
        seconds["Captum LLM IG"] += spent
        rhos["Captum LLM IG"].append(agreement(report, matrix, question_only=True))
    rows = []
    for name, total in seconds.items():
        rho = (
            ""
            if name == "ours"
            else f"{statistics.median([r for r in rhos[name] if not math.isnan(r)] or [math.nan]):.2f}"
        )
        rows.append([name, f"{total:.2f}", f"{total / seconds['ours']:.1f}", rho])
        if name != "ours":
            record("peer_attribution", f"{name}: time / ours", round(total / seconds["ours"], 2))
            record("peer_attribution", f"{name}: Spearman vs eq. 7", rho)
    print(f"shipped model, {args.questions} held-out questions, {tokens} chain tokens, {args.threads} thread(s)")
    print_table(["method", "seconds (all chains)", "× ours", "Spearman vs eq. 7 (median)"], rows)
    speedup = seconds["inseq IG"] / seconds["ours"]
    record("peer_attribution", "inseq IG time / full explain (no rollouts)", round(speedup, 1), f">= {GOAL:g}",
           verdict(speedup, GOAL, at_most=False))  # fmt: skip
    print(f"goal full explain (no rollouts) >= {GOAL:g}x faster than inseq IG: {speedup:.1f}x "
          f"{verdict(speedup, GOAL, at_most=False)}")  # fmt: skip


if __name__ == "__main__":
    main()
