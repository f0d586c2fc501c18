"""Pure metrics of the introspection measurement: span matching, rankings, faithfulness scores, shares, ECE and
AUROC."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from ...inverse.answers import expected_calibration_error
from ...inverse.calibration import ECE_BINS

ENGINE_RANKINGS = {"eq7": "significance", "attention_only": "attention", "gradient_only": "gradient"}
TOP_K = 3


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
    """ECE with `ECE_BINS` equal-width bins; NaN when there is nothing to calibrate."""
    return expected_calibration_error(list(confidences), list(correct), ECE_BINS) if confidences else math.nan


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """The area under the ROC curve of `scores` for `labels` (scikit-learn's; ties count half); NaN when one class
    is empty."""
    if len(set(labels)) < 2:
        return math.nan
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([bool(x) for x in labels], list(scores)))


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


def share(flags: Sequence) -> float:
    """The share of true flags (NaN when there are none)."""
    return mean([float(f) for f in flags])
