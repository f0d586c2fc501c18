"""Introspection accuracy of `sagenano.explain` on held-out ground-truth items, beside attribution baselines.

Entry point: `measure_introspection(model, tokenizer, IntrospectionSettings(...))`. It returns a JSON-ready dict:
per part, per ranking method, per task and "overall", with the steps or items each number pools, the seconds per
item of each part and the seconds per explained step of each method. `bench/introspection.py` prints it.

Items: `generate_items(task, n, seed, "heldout")` per task (default 500 each, seed EVAL_SEED). Every span
ranking is measured on the same report: eq. 7 (rank a step's candidate spans by `.significance` = attention ×
gradient × entropy), attention-only (by `.attention`) and gradient-only (by `.gradient`), and the Figure-2
baselines of `sagenano.eval.baselines` named in `baselines` (attention visualisation, gradient saliency,
integrated gradients, LIME, SHAP, and leave-one-span-out ablation: the scores `baseline_span_scores` gives the
step's candidate spans, `baseline_samples` perturbations for LIME and SHAP, seeded per item and step); ties are
broken by the spans' order in the text (question first, then the steps in order), and a NaN score ranks last.

1. Dependency tracking (every item; the GOLD chain explained with `chain=`, rollouts and validation off).
   The gold chain is the training text after the prompt; report step k must be gold step k (and the last
   report step the answer) or the item is skipped and counted. For each gold step k with >= 1 gold dependency:
   - a candidate span is a TRUE dependency when its char range overlaps a gold dependency of the same source
     (question, or step source with the same step index); it is a DISTRACTOR when it is a question span that
     overlaps one of the item's distractor spans and is not a true dependency;
   - top-1 = 1 if the top-ranked span is a true dependency, else 0;
   - precision@3 = (true spans among the top 3) / 3;
   - recall@3 = (gold dependencies overlapped by >= 1 of the top 3) / (number of gold dependencies);
   - distractor-wins (only steps of items that have distractors) = 1 if the best-ranked distractor span ranks
     above the best-ranked true span (no true span at all counts as ranking last), else 0.
   Reported as means over steps (pooled over items; "overall" pools every task's steps).
2. Alternative paths (the model's OWN greedy chain: `explain(..., rollouts=True, validate=True)`, engine
   defaults except `own_explanation=False`, on `own_items` per task): verified share = alternative claims with
   status "verified" / all alternative claims (those refinement removed count, as refuted). Also at
   threshold `low_threshold` (default 0.05) on the `decision_items` subset, so there are alternatives to check.
3. Decision points (own chain, `decision_items` per task, items whose chain has `<|answer|>`). For reasoning step
   k (the steps before the answer step): scores entropy_k = max normalised token entropy over the step's tokens
   (`report.tokens[t].entropy`); meta_k = max over its tokens of the meta head's decision probability at step
   starts (`meta_at_step_starts`, SAGE only); combined_k = max(entropy_k, meta_k) (the report's "combined"
   decision score); position_k = k (baseline). Effect: R = `resamples` samples (temperature 1, top_k 0,
   seeded) continue the chain from the start of step k and from the start of step k + 1 (the answer step's
   start, i.e. right after `<|answer|>`, for the last reasoning step); p_k = share of samples whose
   `parse_answer` equals the greedy answer; effect_k = |p_{k+1} − p_k|. Spearman rank correlation (average
   ranks for ties) of score vs effect, pooled over the steps of a task (and of all tasks). The chain and its
   scores come from the threshold-0.3 report when the item has one (the greedy chain is the same at any threshold).
4. Calibration (own chains of the `own_items`). Answer: confidence = `report.answer_confidence` (0 when the chain
   has no `<|answer|>`, and it is wrong), correct = parsed answer == gold answer. Step: confidence =
   `step.confidence` (mean token probability) of each reasoning step, correct = own step k's text == gold step
   k's text exactly (steps beyond the gold ones are wrong).
   ECE with 15 equal-width bins (`expected_calibration_error`) before and after calibration. After, answers:
   `report.calibrated_answer_confidence` with the model's stored calibration (temperature and isotonic curve),
   else one fitted in this run (library `fit_calibration` on the calibration set's `AnswerRecord`s, built as
   `calibrate` builds them from batched greedy chains, here of at most 160 new tokens like the explained chains).
   After, steps: a step temperature T_s fitted on the same calibration set (grid 0.05..20, log-loss of step
   correctness) and applied to teacher-forced logits of the own chain: mean over the step's tokens of
   softmax(logits / T_s)[token]. Calibration set: heldout items, seed `seed` + 1000, `calibration_items` per task.
5. Faithfulness (ERASER-style; gold chain, `faithfulness_items` per task). For each gold step k with
   dependencies, NLL = the step's summed token negative log-likelihood (nats, teacher forcing) with spans masked
   (their tokens replaced by the padding token). Top-3 = the token positions of a method's 3 best spans.
   comprehensiveness = NLL(top-3 masked) − NLL(nothing masked) (higher is better);
   sufficiency = NLL(every other candidate span of the step masked, top-3 kept) − NLL(nothing masked) (lower is
   better). Random: the same with random spans of exactly as many tokens as that method's top-3 (candidate spans
   in random order, taken until the count is reached), mean over 3 seeded draws.
6. Explanation time (the methods of parts 1 and 5), seconds per explained step, over the aligned items of part 1:
   eq. 7 = the wall time of the gold chain's `explain` (which explains every step of the chain in one call;
   attention-only and gradient-only come from the same call) / the report's steps; a baseline = its wall time
   per `baseline_span_scores` call (one step each).

Cost: part 1 runs on every item (with the baselines, timed as the part "baselines"), the others on the first
items of each task (the caps above; the output says the counts used). The first 2 items of every task are
measured first and timed; with `progress` the projected time of this run and of a default run is printed then.

Goals: dependency top-1 >= 90 % (eq. 7); distractor-wins <= 5 % (eq. 7); alternatives >= 95 % verified;
answer ECE <= 0.05 after calibration; eq. 7 top-1 strictly above attention-only and gradient-only.
"""

from __future__ import annotations

import math
import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data import generate_items, parse_answer, prompt_text, training_text
from ..data.schema import ReasoningItem
from ..generation import render_prompt, trace_generate
from ..inverse import ExplainOptions, Report, explain
from ..inverse.calibration import AnswerCalibration, AnswerRecord, fit_calibration
from ..inverse.engine import meta_at_step_starts, step_separators
from ..inverse.measure import Chain, ablate, is_sage, replacement_id, score_chain, step_inputs, step_losses
from .baselines import BASELINES, baseline_span_scores
from .synthetic import EVAL_SEED, TASKS, _answer_span, expected_calibration_error

ENGINE_RANKINGS = {"eq7": "significance", "attention_only": "attention", "gradient_only": "gradient"}
TOP_K = 3
ECE_BINS = 15
RANDOM_DRAWS = 3
WARM_ITEMS = 2  # the first items of every task, measured first and timed for the projection
ANSWER = "<|answer|>"
GRID = torch.logspace(math.log10(0.05), math.log10(20), 241)  # the grid of `fit_temperature`
THRESHOLD = ExplainOptions().threshold  # the engine's default decision threshold (0.3)
DECISION_SCORES = ("entropy", "meta", "combined", "position")
PARTS = ("dependency", "baselines", "faithfulness", "own", "alternatives_low", "decision")  # timed separately
GOAL_TOP1, GOAL_DISTRACTOR, GOAL_VERIFIED, GOAL_ECE = 0.90, 0.05, 0.95, 0.05


# ---------------------------------------------------------------------------------------------------
# Pure metric helpers


def overlaps(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    """Whether the char ranges [a_start, a_end) and [b_start, b_end) share a character."""
    return a_start < b_end and b_start < a_end


def matches(span, gold) -> bool:
    """A candidate span (`SpanRef`) hits a gold `Dependency`: same source (and step), overlapping chars."""
    same = span.source == gold.source and (gold.source == "question" or span.step == gold.step)
    return same and overlaps(span.start, span.end, gold.start, gold.end)


def is_true_dependency(span, gold: Sequence) -> bool:
    return any(matches(span, g) for g in gold)


def is_distractor(span, gold: Sequence, distractors: Sequence) -> bool:
    """A question span overlapping a distractor `Span` (and no gold dependency)."""
    if span.source != "question" or is_true_dependency(span, gold):
        return False
    return any(overlaps(span.start, span.end, d.start, d.end) for d in distractors)


def text_order(span) -> tuple:
    """The span's place in the text: question spans first, then each step's, by position."""
    return (span.source == "step", -1 if span.step is None else span.step, span.start, span.end)


def rank_by_scores(dependencies: Sequence, scores: Sequence[float]) -> list:
    """`dependencies` ranked by `scores` (one each; highest first, NaN last), ties in text order."""
    if len(scores) != len(dependencies):
        raise ValueError(f"rank_by_scores needs one score per span, got {len(scores)} for {len(dependencies)}")
    keys = [math.inf if math.isnan(s) else -s for s in scores]
    order = sorted(range(len(dependencies)), key=lambda i: (keys[i], text_order(dependencies[i].span)))
    return [dependencies[i] for i in order]


def rank(dependencies: Sequence, method: str) -> list:
    """`DependencyScore`s ranked by an engine ranking's score (`ENGINE_RANKINGS`), highest first."""
    key = ENGINE_RANKINGS[method]
    return rank_by_scores(dependencies, [getattr(d, key) for d in dependencies])


def distractor_wins(spans: Sequence, gold: Sequence, distractors: Sequence) -> bool:
    """Whether the best-ranked distractor span ranks above the best-ranked true span (`spans` ranked)."""
    first_true = next((i for i, s in enumerate(spans) if is_true_dependency(s, gold)), math.inf)
    first_distractor = next((i for i, s in enumerate(spans) if is_distractor(s, gold, distractors)), math.inf)
    return first_distractor < first_true


def ranking_metrics(spans: Sequence, gold: Sequence, distractors: Sequence, k: int = TOP_K) -> dict:
    """top-1, precision@k, recall@k and distractor-wins (None without distractors) of ranked spans."""
    if not gold:
        raise ValueError("ranking metrics need at least one gold dependency")
    truth = [is_true_dependency(s, gold) for s in spans]
    top = spans[:k]
    return {
        "top1": bool(truth and truth[0]),
        "precision": sum(truth[:k]) / k,
        "recall": sum(any(matches(s, g) for s in top) for g in gold) / len(gold),
        "distractor_win": distractor_wins(spans, gold, distractors) if distractors else None,
    }


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson on average ranks); NaN with < 2 pairs or a constant side."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs pairs, got {len(x)} and {len(y)} values")
    if len(x) < 2:
        return math.nan
    rx, ry = average_ranks(x), average_ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def random_positions(spans: Sequence[Sequence[int]], count: int, rng: random.Random) -> list[int]:
    """`count` token positions from spans taken in random order (the last one cut), sorted."""
    chosen: list[int] = []
    for i in rng.sample(range(len(spans)), len(spans)):
        for p in spans[i]:
            if len(chosen) == count:
                return sorted(chosen)
            if p not in chosen:
                chosen.append(p)
    return sorted(chosen)


def erasure_rows(kept_or_removed: set[int], pool: set[int]) -> tuple[list[int], list[int]]:
    """Positions to mask for comprehensiveness (the spans) and for sufficiency (the pool but the spans)."""
    return sorted(kept_or_removed), sorted(pool - kept_or_removed)


def comprehensiveness(nll_full: float, nll_removed: float) -> float:
    """NLL increase when the spans are removed (masked): higher means they mattered."""
    return nll_removed - nll_full


def sufficiency(nll_full: float, nll_only_kept: float) -> float:
    """NLL increase when only the spans are kept: lower means they suffice."""
    return nll_only_kept - nll_full


def ece(confidences: Sequence[float], correct: Sequence[bool]) -> float:
    return expected_calibration_error(list(confidences), list(correct), ECE_BINS) if confidences else math.nan


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


# ---------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class IntrospectionSettings:
    """What a run measures and with what (the module docstring defines every part)."""

    model_name: str = "sage"  # the reports' model name
    n: int = 500  # held-out items per task: dependency tracking (and the baselines) on all of them
    own_items: int = 80  # items per task whose own chain is explained: alternatives at 0.3 and calibration
    decision_items: int = 25  # items per task for decision points and the low-threshold alternatives
    faithfulness_items: int = 80  # items per task for faithfulness
    calibration_items: int = 100  # calibration items per task, seed `seed` + 1000 (0: no fit)
    max_new_tokens: int = 160  # of every own chain (and of the calibration set's)
    resamples: int = 8  # samples per cut of the chain (decision points)
    seed: int = EVAL_SEED  # item seed; also seeds explain, the resamples and the baselines' sampling
    low_threshold: float = 0.05  # the second decision threshold of the alternatives
    baselines: tuple[str, ...] = BASELINES  # the Figure-2 baselines ranked beside eq. 7 (parts 1 and 5)
    baseline_samples: int = 64  # LIME's and SHAP's perturbations per step
    answer_calibration: AnswerCalibration | None = None  # set by `measure_introspection`: stored or fitted
    step_temperature: float | None = None  # likewise; None: no calibrated confidences

    def __post_init__(self) -> None:
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; choose from {', '.join(BASELINES)} (or none)")
        if self.n < 1:
            raise ValueError(f"n must be at least 1 item per task, got {self.n}")
        for name in ("own_items", "decision_items", "faithfulness_items", "calibration_items"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("resamples", "baseline_samples", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def methods(self) -> tuple[str, ...]:
        """Every ranking of parts 1 and 5: the engine's, then the baselines."""
        return (*ENGINE_RANKINGS, *self.baselines)


# ---------------------------------------------------------------------------------------------------
# Measuring one item


def gold_chain(item: ReasoningItem) -> str:
    return training_text(item)[len(prompt_text(item.question)) :]


def aligned(report: Report, item: ReasoningItem) -> bool:
    """Report step k is gold step k, the last report step is the answer, and the question is unchanged."""
    steps = report.steps
    return (
        report.question == item.question
        and report.prompt == prompt_text(item.question)
        and len(steps) == len(item.steps) + 1
        and all(s.text == g for s, g in zip(steps, item.steps, strict=False))
        and steps[-1].is_answer
        and steps[-1].text == item.answer
    )


def report_chain(report: Report) -> Chain:
    return Chain(torch.tensor(report.prompt_ids), torch.tensor([t.id for t in report.tokens]))


def item_seed(settings: IntrospectionSettings, item: ReasoningItem) -> int:
    return (settings.seed * 1_000_003 + zlib.crc32(item.id.encode())) % 2**31


def ranked_steps(report: Report, item: ReasoningItem) -> list[int]:
    """The gold steps parts 1 and 5 measure: those with gold dependencies and candidate spans."""
    return [k for k, gold in enumerate(item.dependencies) if gold and report.steps[k].dependencies]


def engine_rankings(report: Report, item: ReasoningItem) -> dict[int, dict[str, list]]:
    """Per measured step: each engine ranking of its candidate spans (best first)."""
    return {k: {m: rank(report.steps[k].dependencies, m) for m in ENGINE_RANKINGS} for k in ranked_steps(report, item)}


def add_baseline_rankings(model, tokenizer, report: Report, item: ReasoningItem, settings: IntrospectionSettings,
                          rankings: dict[int, dict[str, list]]) -> dict[str, float]:  # fmt: skip
    """Adds each baseline's ranking to every measured step of `rankings`; returns each baseline's wall seconds."""
    seconds = dict.fromkeys(settings.baselines, 0.0)
    for k, methods in rankings.items():
        for method in settings.baselines:
            start = time.perf_counter()
            scores = baseline_span_scores(method, model, tokenizer, report, k, n_samples=settings.baseline_samples,
                                          seed=item_seed(settings, item) + k)  # fmt: skip
            seconds[method] += time.perf_counter() - start
            methods[method] = rank_by_scores(report.steps[k].dependencies, scores)
    return seconds


def dependency_records(report: Report, item: ReasoningItem, rankings: dict[int, dict[str, list]]) -> list[dict]:
    """Per measured step: the ranking metrics of every method."""
    return [
        {"step": k, "gold": len(item.dependencies[k]), "candidates": len(report.steps[k].dependencies),
         **{m: ranking_metrics([d.span for d in ranked], item.dependencies[k], item.distractors)
            for m, ranked in methods.items()}}
        for k, methods in rankings.items()
    ]  # fmt: skip


def faithfulness_records(model, tokenizer, report: Report, item: ReasoningItem, settings: IntrospectionSettings,
                         rankings: dict[int, dict[str, list]]) -> list[dict]:  # fmt: skip
    """Per measured step: comprehensiveness and sufficiency of each method's top 3, and of random spans."""
    chain = report_chain(report)
    replacement = replacement_id(tokenizer)
    records = []
    for k, methods in rankings.items():
        step = report.steps[k]
        tokens = range(step.token_start, step.token_end)
        spans = [d.span.positions for d in step.dependencies]
        pool = {p for positions in spans for p in positions}
        rng = random.Random(item_seed(settings, item) + k)
        rows: list[list[int]] = [[]]
        plans = {}
        for method, ranked in methods.items():
            top = {p for d in ranked[:TOP_K] for p in d.span.positions}
            plans[method] = (len(rows), len(top))
            rows.extend(erasure_rows(top, pool))
            for _ in range(RANDOM_DRAWS):
                rows.extend(erasure_rows(set(random_positions(spans, len(top), rng)), pool))
        nll = step_losses(model, ablate(step_inputs(chain, tokens), rows, replacement), chain, tokens).tolist()
        record = {"step": k, "nll": nll[0]}
        for method, (at, count) in plans.items():
            draws = [nll[at + 2 + 2 * d : at + 4 + 2 * d] for d in range(RANDOM_DRAWS)]
            record[method] = {
                "tokens": count,
                "comprehensiveness": comprehensiveness(nll[0], nll[at]),
                "sufficiency": sufficiency(nll[0], nll[at + 1]),
                "random_comprehensiveness": mean([comprehensiveness(nll[0], d[0]) for d in draws]),
                "random_sufficiency": mean([sufficiency(nll[0], d[1]) for d in draws]),
            }
        records.append(record)
    return records


def alternative_counts(report: Report) -> dict:
    """Alternative claims and how many were verified (claims refinement removed count, as refuted)."""
    removed = report.validation.removed_claims if report.validation else []
    claims = [c for c in [*report.claims, *removed] if c.kind == "alternative"]
    return {
        "decision_points": len(report.decision_points),
        "alternatives": len(claims),
        "verified": sum(c.status == "verified" for c in claims),
    }


def answer_step(report: Report):
    """The answer step when the chain writes `<|answer|>`, else None."""
    if ANSWER not in report.chain:
        return None
    return next((s for s in report.steps if s.is_answer), None)


def reasoning_steps(report: Report) -> list:
    """The steps before the answer step (all steps when the chain writes no `<|answer|>`)."""
    last = answer_step(report)
    return [s for s in report.steps if last is None or s.index < last.index]


@torch.no_grad()
def chain_logits(model, chain: Chain) -> torch.Tensor:
    """(T, V) teacher-forced logits: row t predicts generated token t."""
    inputs = chain.inputs[None].to(model.device)
    return model(input_ids=inputs, use_cache=False, logits_to_keep=len(chain.token_ids)).logits[0].float().cpu()


def step_confidence_at(logits: torch.Tensor, ids: torch.Tensor, temperatures: torch.Tensor) -> torch.Tensor:
    """(G,) mean token probability of a step (its logits (n, V) and tokens (n,)) at each temperature."""
    result = []
    for chunk in temperatures.split(32):
        logp = (logits[None] / chunk[:, None, None]).log_softmax(-1)  # (g, n, V)
        result.append(logp.gather(2, ids[None, :, None].expand(len(chunk), -1, 1))[..., 0].exp().mean(1))
    return torch.cat(result)


def calibration_record(model, report: Report, item: ReasoningItem, settings: IntrospectionSettings) -> dict:
    """The own chain's answer and step confidences, raw and calibrated, with their correctness."""
    answered = answer_step(report) is not None
    record = {
        "answered": answered,
        "correct": answered and parse_answer(report.chain) == item.answer,
        "confidence": report.answer_confidence if answered and report.answer_confidence is not None else 0.0,
        "calibrated": None,
        "steps": [],
    }
    if settings.answer_calibration is not None:  # the report's calibrated confidence; 0 without an answer
        record["calibrated"] = (report.calibrated_answer_confidence or 0.0) if answered else 0.0
    steps = reasoning_steps(report)
    logits = chain_logits(model, report_chain(report)) if settings.step_temperature and steps else None
    for step in steps:
        calibrated = None
        if logits is not None:
            ids = torch.tensor([t.id for t in report.tokens[step.token_start : step.token_end]])
            rows = logits[step.token_start : step.token_end]
            calibrated = float(step_confidence_at(rows, ids, torch.tensor([settings.step_temperature]))[0])
        correct = step.index < len(item.steps) and step.text == item.steps[step.index]
        record["steps"].append({"confidence": step.confidence, "calibrated": calibrated, "correct": correct})
    return record


def eos_ids(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


@torch.no_grad()
def resampled_answers(model, tokenizer, chain: Chain, starts: list[int], settings: IntrospectionSettings,
                      seed: int) -> list:  # fmt: skip
    """For each start (a generated-token index), the answers of `resamples` sampled continuations of the chain
    cut there; one left-padded `generate` call for all of them."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prefixes = [torch.cat([chain.prompt_ids, chain.token_ids[:s]]) for s in starts]
    rows = [p for p in prefixes for _ in range(settings.resamples)]
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, longest - len(row) :] = row
        mask[r, longest - len(row) :] = 1
    room = (getattr(model.config, "max_position_embeddings", None) or 10**9) - longest
    budgets = [max(1, min(settings.max_new_tokens - s, room)) for s in starts]
    torch.manual_seed(seed)
    out = model.generate(
        input_ids=ids.to(model.device), attention_mask=mask.to(model.device), do_sample=True, top_k=0, top_p=1.0,
        temperature=1.0, max_new_tokens=max(budgets), pad_token_id=pad,
    )  # fmt: skip
    eos = eos_ids(model)
    answers = []
    for i, start in enumerate(starts):
        found = []
        for r in range(i * settings.resamples, (i + 1) * settings.resamples):
            new = out[r, longest:].tolist()[: budgets[i]]
            cut = next((j for j, t in enumerate(new) if t in eos), len(new))
            found.append(parse_answer(tokenizer.decode(chain.token_ids[:start].tolist() + new[:cut])))
        answers.append(found)
    return answers


def step_meta_scores(model, report: Report, steps: list) -> list[float] | None:
    """Per step: max over its tokens of the meta head's decision probability at step starts (SAGE only)."""
    if not is_sage(model):
        return None
    chain = report_chain(report)
    meta = meta_at_step_starts(score_chain(model, chain, []), chain, step_separators(model))
    if meta is None:
        return None
    return [float(meta[s.token_start : s.token_end].max()) for s in steps]


def decision_records(model, tokenizer, report: Report, item: ReasoningItem, settings: IntrospectionSettings) -> dict:
    """Per reasoning step of the own chain: its decision scores and the measured effect of resampling."""
    last = answer_step(report)
    steps = reasoning_steps(report)
    if last is None or report.answer is None or not steps:
        return {"skipped": "no <|answer|> step, answer or reasoning step before it", "steps": []}
    starts = [s.token_start for s in steps] + [last.token_start]
    answers = resampled_answers(model, tokenizer, report_chain(report), starts, settings, item_seed(settings, item))
    greedy = parse_answer(report.chain)
    p = [sum(a == greedy for a in found) / len(found) for found in answers]
    meta = step_meta_scores(model, report, steps)
    records = []
    for k, step in enumerate(steps):
        entropy = max(t.entropy for t in report.tokens[step.token_start : step.token_end])
        m = None if meta is None else meta[k]
        records.append(
            {"step": k, "entropy": entropy, "meta": m, "combined": entropy if m is None else max(entropy, m),
             "position": float(k), "effect": abs(p[k + 1] - p[k])}
        )  # fmt: skip
    return {"skipped": None, "p": p, "greedy": greedy, "steps": records}


def measure_item(
    model, tokenizer, item: ReasoningItem, settings: IntrospectionSettings, own: bool = True,
    decision: bool = False, faithfulness: bool = False,
) -> dict:  # fmt: skip
    """Every measurement of one item (see the module docstring); `own`, `decision` and `faithfulness` say which
    of the capped parts to run. Returns JSON-ready records, the seconds each part took and, per ranking method,
    the seconds and steps it explained (`method_seconds`; aligned items only)."""
    seconds: dict[str, float] = {}
    result: dict = {"id": item.id, "task": item.task, "has_distractors": bool(item.distractors), "seconds": seconds,
                    "method_seconds": {}}  # fmt: skip
    start = time.perf_counter()
    gold = explain(model, tokenizer, item.question, model_name=settings.model_name, chain=gold_chain(item),
                   rollouts=False, validate=False, own_explanation=False, seed=settings.seed)  # fmt: skip
    explained = time.perf_counter() - start
    result["aligned"] = aligned(gold, item)
    rankings = engine_rankings(gold, item) if result["aligned"] else {}
    seconds["dependency"] = time.perf_counter() - start
    start = time.perf_counter()
    baseline_seconds = add_baseline_rankings(model, tokenizer, gold, item, settings, rankings)
    seconds["baselines"] = time.perf_counter() - start
    result["dependency"] = dependency_records(gold, item, rankings)
    if result["aligned"]:
        result["method_seconds"] = {
            "eq7": {"seconds": explained, "steps": len(gold.steps)},
            **{m: {"seconds": t, "steps": len(rankings)} for m, t in baseline_seconds.items()},
        }
    if faithfulness:
        start = time.perf_counter()
        result["faithfulness"] = faithfulness_records(model, tokenizer, gold, item, settings, rankings)
        seconds["faithfulness"] = time.perf_counter() - start
    own_options = dict(model_name=settings.model_name, rollouts=True, validate=True, own_explanation=False,
                       max_new_tokens=settings.max_new_tokens, calibration=settings.answer_calibration,
                       seed=settings.seed)  # fmt: skip
    report = None
    if own:
        start = time.perf_counter()
        report = explain(model, tokenizer, item.question, **own_options)
        result["alternatives"] = alternative_counts(report)
        result["calibration"] = calibration_record(model, report, item, settings)
        seconds["own"] = time.perf_counter() - start
    if decision:
        start = time.perf_counter()
        low = explain(model, tokenizer, item.question, **{**own_options, "threshold": settings.low_threshold})
        result["alternatives_low"] = alternative_counts(low)
        seconds["alternatives_low"] = time.perf_counter() - start
        start = time.perf_counter()
        result["decision"] = decision_records(model, tokenizer, report or low, item, settings)
        seconds["decision"] = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------------------------------
# Calibration set


@torch.no_grad()
def calibration_set(model, tokenizer, items: list[ReasoningItem], settings: IntrospectionSettings,
                    batch_size: int = 16, progress: bool = True):  # fmt: skip
    """Greedy chains of the calibration items (batched, as `calibrate` does) and, from one teacher-forced pass
    each: answer records (the library's `AnswerRecord`) and, per reasoning step, its mean token probability at
    every grid temperature with its correctness."""
    answers, steps = [], []
    batches = range(0, len(items), batch_size)
    for start in tqdm(batches, desc="calibration set", leave=False, disable=not progress):
        chunk = items[start : start + batch_size]
        prompts = [prompt_text(item.question) for item in chunk]
        longest = max(len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts)
        room = min(settings.max_new_tokens, model.config.max_position_embeddings - longest)
        traces = trace_generate(model, tokenizer, prompts, max_new_tokens=room, attention="none", chat=False)
        for item, trace in zip(chunk, traces, strict=True):
            logits = chain_logits(model, Chain(trace.prompt_ids, trace.token_ids))
            span = _answer_span(trace)
            if span is not None:
                correct = parse_answer(trace.text) == item.answer
                answers.append(AnswerRecord(logits[span[0] : span[1]], trace.token_ids[span[0] : span[1]], correct))
            end = trace.text.index(ANSWER) if ANSWER in trace.text else len(trace.text)
            for k, step in enumerate(s for s in trace.steps if s.char_end <= end):
                rows = range(step.token_start, step.token_end)
                confidence = step_confidence_at(logits[list(rows)], trace.token_ids[list(rows)], GRID)
                steps.append((confidence, k < len(item.steps) and step.text == item.steps[k]))
    return answers, steps


def fit_step_temperature(records: list[tuple[torch.Tensor, bool]]) -> float | None:
    """The grid temperature minimising the log-loss of step correctness (eps 1e-6, as `fit_temperature`)."""
    if not records:
        return None
    confidence = torch.stack([c for c, _ in records]).clamp(1e-6, 1 - 1e-6)  # (S, G)
    correct = torch.tensor([ok for _, ok in records], dtype=torch.float)[:, None]
    loss = -(correct * confidence.log() + (1 - correct) * (1 - confidence).log()).mean(0)
    return float(GRID[int(loss.argmin())])


def _describe(calibration: AnswerCalibration | None) -> dict:
    """The answer calibration as the run's record shows it."""
    return {
        "answer_temperature": calibration.temperature if calibration else None,
        "answer_calibration": calibration.method if calibration else None,
        "answer_curve_points": len(calibration.curve_x) if calibration else 0,
    }


def calibrate_run(
    model, tokenizer, loaded: AnswerCalibration | None, tasks: Sequence[str], settings: IntrospectionSettings,
    progress: bool = True,
) -> tuple[dict, IntrospectionSettings]:  # fmt: skip
    """Fits what this run needs on the calibration set; returns what it did and the settings with the run's
    answer calibration and step temperature."""
    info: dict = {"calibration_items_per_task": settings.calibration_items, "seed": settings.seed + 1000}
    if settings.calibration_items <= 0:
        info["answer_temperature_source"] = "stored" if loaded else "none"
        settings = replace(settings, answer_calibration=loaded, step_temperature=None)
        return {**info, **_describe(loaded), "step_temperature": None}, settings
    items = [i for t in tasks for i in generate_items(t, settings.calibration_items, settings.seed + 1000, "heldout")]
    start = time.perf_counter()
    answers, steps = calibration_set(model, tokenizer, items, settings, progress=progress)
    calibration = None
    if loaded is not None:
        calibration, info["answer_temperature_source"] = loaded, "stored"
    elif answers:
        calibration, info["answer_temperature_source"] = fit_calibration(answers), "fitted"
    else:
        info["answer_temperature_source"] = "none (no calibration chain has an answer)"
    settings = replace(settings, answer_calibration=calibration, step_temperature=fit_step_temperature(steps))
    correct = [r.correct for r in answers]
    return {
        **info, **_describe(calibration), "step_temperature": settings.step_temperature,
        "n_items": len(items), "n_answered": len(answers), "n_steps": len(steps),
        "calibration_set_answer_ece_before": ece([r.prob() for r in answers], correct),
        "calibration_set_answer_ece_after": ece([calibration.confidence(r.logits, r.ids) for r in answers], correct)
        if calibration else math.nan,
        "seconds": time.perf_counter() - start,
    }, settings  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Summaries


def share(flags: Sequence) -> float:
    return mean([float(f) for f in flags])


def summarise_dependency(results: list[dict], methods: Sequence[str]) -> dict:
    steps = [s for r in results for s in r.get("dependency", [])]
    with_distractors = [s for r in results if r["has_distractors"] for s in r.get("dependency", [])]
    return {
        m: {"steps": len(steps), "top1": share([s[m]["top1"] for s in steps]),
            "precision@3": mean([s[m]["precision"] for s in steps]),
            "recall@3": mean([s[m]["recall"] for s in steps]),
            "distractor_steps": len(with_distractors),
            "distractor_wins": share([s[m]["distractor_win"] for s in with_distractors])}
        for m in methods
    }  # fmt: skip


def summarise_alternatives(results: list[dict], key: str) -> dict:
    rows = [r[key] for r in results if key in r]
    total = sum(r["alternatives"] for r in rows)
    verified = sum(r["verified"] for r in rows)
    return {"items": len(rows), "decision_points": sum(r["decision_points"] for r in rows), "alternatives": total,
            "verified": verified, "verified_share": verified / total if total else math.nan}  # fmt: skip


def summarise_decision(results: list[dict]) -> dict:
    rows = [r["decision"] for r in results if "decision" in r]
    steps = [s for d in rows for s in d["steps"]]
    effect = [s["effect"] for s in steps]
    correlations = {}
    for score in DECISION_SCORES:
        values = [s[score] for s in steps]
        correlations[score] = math.nan if any(v is None for v in values) else spearman(values, effect)
    return {"items": len(rows), "skipped": sum(d["skipped"] is not None for d in rows), "steps": len(steps),
            "mean_effect": mean(effect), "spearman": correlations}  # fmt: skip


def summarise_calibration(results: list[dict]) -> dict:
    rows = [r["calibration"] for r in results if "calibration" in r]
    steps = [s for r in rows for s in r["steps"]]
    correct = [r["correct"] for r in rows]
    step_correct = [s["correct"] for s in steps]
    after = None if any(r["calibrated"] is None for r in rows) else [r["calibrated"] for r in rows]
    step_after = None if any(s["calibrated"] is None for s in steps) else [s["calibrated"] for s in steps]
    return {
        "items": len(rows), "answered": sum(r["answered"] for r in rows), "accuracy": share(correct),
        "answer_ece_before": ece([r["confidence"] for r in rows], correct),
        "answer_ece_after": math.nan if after is None else ece(after, correct),
        "steps": len(steps), "step_accuracy": share(step_correct),
        "step_ece_before": ece([s["confidence"] for s in steps], step_correct),
        "step_ece_after": math.nan if step_after is None else ece(step_after, step_correct),
    }  # fmt: skip


def summarise_faithfulness(results: list[dict], methods: Sequence[str]) -> dict:
    steps = [s for r in results for s in r.get("faithfulness", [])]
    keys = ("comprehensiveness", "random_comprehensiveness", "sufficiency", "random_sufficiency", "tokens")
    return {
        "items": sum("faithfulness" in r for r in results), "steps": len(steps),
        **{m: {k: mean([s[m][k] for s in steps]) for k in keys} for m in methods},
    }  # fmt: skip


def summarise_timings(results: list[dict], methods: Sequence[str]) -> dict:
    """Seconds per item of each part, and per explained step of eq. 7 (the engine) and of each baseline."""
    parts = {}
    for part in PARTS:
        values = [r["seconds"][part] for r in results if part in r["seconds"]]
        parts[part] = {"items": len(values), "seconds_per_item": mean(values)}
    timed = {}
    for m in ("eq7", *(m for m in methods if m not in ENGINE_RANKINGS)):
        rows = [r["method_seconds"][m] for r in results if m in r["method_seconds"]]
        steps = sum(row["steps"] for row in rows)
        seconds = sum(row["seconds"] for row in rows)
        timed[m] = {"steps": steps, "seconds": seconds, "seconds_per_step": seconds / steps if steps else math.nan}
    return {"parts": parts, "methods": timed}


def summarise(results: list[dict], methods: Sequence[str] = tuple(ENGINE_RANKINGS)) -> dict:
    """Every part's numbers over `results` (items of one task, or of all), each ranking method of `methods`."""
    return {
        "items": len(results),
        "misaligned": sum(not r["aligned"] for r in results),
        "dependency": summarise_dependency(results, methods),
        "alternatives": summarise_alternatives(results, "alternatives"),
        "alternatives_low": summarise_alternatives(results, "alternatives_low"),
        "decision": summarise_decision(results),
        "calibration": summarise_calibration(results),
        "faithfulness": summarise_faithfulness(results, methods),
        "timings": summarise_timings(results, methods),
    }


def goals(overall: dict) -> list[dict]:
    """Each goal's measured value, target and verdict (NaN, i.e. nothing measured, fails)."""
    dep = overall["dependency"]
    top1 = dep["eq7"]["top1"]
    baseline = max(dep["attention_only"]["top1"], dep["gradient_only"]["top1"])
    verified, verified_low = overall["alternatives"]["verified_share"], overall["alternatives_low"]["verified_share"]
    distractors, answer_ece = dep["eq7"]["distractor_wins"], overall["calibration"]["answer_ece_after"]
    rows = [
        ("dependency top-1 (eq. 7)", "share", top1, f">= {GOAL_TOP1:.0%}", top1 >= GOAL_TOP1),
        ("distractor-wins (eq. 7)", "share", distractors, f"<= {GOAL_DISTRACTOR:.0%}", distractors <= GOAL_DISTRACTOR),
        (f"alternatives verified (threshold {THRESHOLD:g})", "share", verified, f">= {GOAL_VERIFIED:.0%}",
         verified >= GOAL_VERIFIED),
        ("alternatives verified (low threshold)", "share", verified_low, f">= {GOAL_VERIFIED:.0%}",
         verified_low >= GOAL_VERIFIED),
        ("answer ECE after calibration", "value", answer_ece, f"<= {GOAL_ECE}", answer_ece <= GOAL_ECE),
        ("eq. 7 top-1 minus best of attention-only and gradient-only", "margin", top1 - baseline,
         "> 0 (beats both)", top1 > baseline),
    ]  # fmt: skip
    return [  # a comparison with NaN (nothing measured) is False: FAIL
        {"goal": g, "kind": kind, "measured": v, "target": t, "result": "PASS" if ok else "FAIL"}
        for g, kind, v, t, ok in rows
    ]


# ---------------------------------------------------------------------------------------------------
# Running


def part_counts(settings: IntrospectionSettings) -> dict[str, int]:
    """Items per task that each part measures (the first ones of the task)."""
    n, decision = settings.n, min(settings.decision_items, settings.n)
    return {"dependency": n, "baselines": n if settings.baselines else 0,
            "faithfulness": min(settings.faithfulness_items, n), "own": min(settings.own_items, n),
            "alternatives_low": decision, "decision": decision}  # fmt: skip


def projected_seconds(seconds: dict[str, dict[str, list[float]]], counts: dict[str, int]) -> float:
    """Seconds the whole run takes at each task's measured mean per part (parts never measured count 0)."""
    return sum(mean(v) * counts[part] for task in seconds.values() for part, v in task.items() if v)


def projection(seconds: dict[str, dict[str, list[float]]], settings: IntrospectionSettings, calibration: dict,
               tasks: Sequence[str]) -> dict:  # fmt: skip
    """This run's projected minutes of items, and those of a default run (all tasks, default counts, this run's
    baselines), at the measured speeds."""
    defaults = part_counts(replace(IntrospectionSettings(), baselines=settings.baselines))
    per_calibration_item = calibration.get("seconds", 0.0) / max(1, calibration.get("n_items", 0))
    default_calibration = per_calibration_item * IntrospectionSettings.calibration_items * len(TASKS)
    default_items = projected_seconds(seconds, defaults) * len(TASKS) / len(tasks)
    return {
        "this_run_minutes": projected_seconds(seconds, part_counts(settings)) / 60,
        "default_run_minutes": (default_items + default_calibration) / 60,
        "default_calibration_minutes": default_calibration / 60,
    }


def describe_projection(projected: dict) -> str:
    d = IntrospectionSettings()
    return (
        f"projected: this run {projected['this_run_minutes']:.1f} min of items; a default run (n {d.n}, own "
        f"{d.own_items}, decision {d.decision_items}, faithfulness {d.faithfulness_items}, calibration "
        f"{d.calibration_items} items per task, {len(TASKS)} tasks) {projected['default_run_minutes']:.1f} min "
        f"({projected['default_calibration_minutes']:.1f} of them the calibration set)"
    )


def json_ready(value):
    """`value` with NaN as None and tuples as lists, for `json.dump`."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def check_prompt_format(tokenizer) -> None:
    if render_prompt(tokenizer, "Q?", None) != prompt_text("Q?"):
        raise ValueError("introspection accuracy needs SAGE's prompt format (<|question|>q<|step|>) from the "
                         "tokenizer's chat template; save the model with its chat_template.jinja")  # fmt: skip


def measure_introspection(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    settings: IntrospectionSettings | None = None,
    tasks: Sequence[str] = TASKS,
    progress: bool = True,
    loaded_calibration: AnswerCalibration | None = None,
) -> dict:
    """Introspection accuracy of the engine, and of the baselines, on held-out items (see the module docstring).

    Args:
        settings: item counts, seeds and baselines (default `IntrospectionSettings()`: a run of hours on a CPU).
        tasks: synthetic tasks to measure, each summarised alone and all together as "overall".
        progress: show progress bars and print the projected time once the first items are measured.
        loaded_calibration: the model's stored answer calibration (`load_model(...).calibration`); without it
            one is fitted on the calibration set.

    Returns:
        A JSON-ready dict (NaN as None): "settings" (with the run's calibration), "tasks", "methods" (the
        rankings of parts 1 and 5), "counts" (items per task and part), "calibration" (what the calibration set
        gave), "summary" (per task and "overall": every part per method with its step or item counts, and
        "timings": seconds per item of each part and per explained step of each method), "goals", "timings"
        (total and calibration seconds, projected minutes) and "items" (every item's records, per task).
    """
    settings = settings or IntrospectionSettings()
    tasks = list(tasks)
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise ValueError(f"unknown or no tasks {unknown or tasks}; choose from {', '.join(TASKS)}")
    check_prompt_format(tokenizer)
    started = time.perf_counter()
    calibration, settings = calibrate_run(model, tokenizer, loaded_calibration, tasks, settings, progress)
    counts = part_counts(settings)
    items = {t: generate_items(t, settings.n, settings.seed, "heldout") for t in tasks}
    warm = min(WARM_ITEMS, settings.n)
    order = [(t, i) for i in range(warm) for t in tasks] + [(t, i) for t in tasks for i in range(warm, settings.n)]
    seconds: dict[str, dict[str, list[float]]] = {t: {p: [] for p in PARTS} for t in tasks}
    results: dict[str, list[dict]] = {t: [] for t in tasks}
    bar = tqdm(order, desc="items", unit="item", disable=not progress)
    for done, (task, i) in enumerate(bar, start=1):
        result = measure_item(model, tokenizer, items[task][i], settings, own=i < counts["own"],
                              decision=i < counts["decision"], faithfulness=i < counts["faithfulness"])  # fmt: skip
        results[task].append(result)
        for part, value in result["seconds"].items():
            seconds[task][part].append(value)
        if progress and done == warm * len(tasks):
            _report_warm_items(bar.write, seconds, warm, projection(seconds, settings, calibration, tasks))
    summary = {t: summarise(results[t], settings.methods) for t in tasks}
    summary["overall"] = summarise([r for t in tasks for r in results[t]], settings.methods)
    return json_ready({
        "settings": asdict(settings), "tasks": tasks, "methods": settings.methods, "counts": counts,
        "calibration": calibration, "summary": summary, "goals": goals(summary["overall"]),
        "timings": {"total_seconds": time.perf_counter() - started, "calibration_seconds": calibration.get("seconds"),
                    "projection": projection(seconds, settings, calibration, tasks)},
        "items": results,
    })  # fmt: skip


def _report_warm_items(write: Callable[[str], None], seconds: dict, warm: int, projected: dict) -> None:
    per = "; ".join(f"{t}: " + ", ".join(f"{p} {mean(v):.2f}" for p, v in parts.items() if v)
                    for t, parts in seconds.items())  # fmt: skip
    write(f"seconds per item and part (first {warm} items): {per}")
    write(describe_projection(projected))
