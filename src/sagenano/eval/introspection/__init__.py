"""Introspection accuracy of `sagenano.explain` on held-out ground-truth items, beside attribution baselines.

`measure_introspection(model, tokenizer, IntrospectionSettings(...))` measures, on the synthetic tasks' held-out
items, dependency tracking (eq. 7 against attention-only, gradient-only and the Figure-2 baselines), the
verification of alternative paths, decision points, calibration, faithfulness and explanation time, and returns a
JSON-ready dict that `bench/introspection.py` and `sage-nano report` print. `docs/introspection.md` defines every
part, number and goal. Modules: `metrics` (pure functions), `measure` (one item), `calibration` (the calibration
set and what it fits), `summary` (per part and method, the goals), `run` (the run and its projected time).
"""

from ..rank_correlation import average_ranks, spearman
from ..task_accuracy import EVAL_SEED, TASKS
from .calibration import calibrate_run, calibration_set, chain_logits, fit_step_temperature, step_confidence_at
from .measure import (
    aligned,
    alternative_counts,
    calibration_record,
    decision_records,
    dependency_records,
    engine_rankings,
    faithfulness_records,
    gold_chain,
    measure_item,
)
from .metrics import (
    ENGINE_RANKINGS,
    comprehensiveness,
    distractor_wins,
    erasure_rows,
    is_distractor,
    is_true_dependency,
    overlaps,
    random_positions,
    rank,
    rank_by_scores,
    ranking_metrics,
    share,
    sufficiency,
)
from .run import check_prompt_format, describe_projection, json_ready, measure_introspection, part_counts
from .settings import PARTS, IntrospectionSettings
from .summary import STEP_SCORES, THRESHOLD, goals, summarise

__all__ = [
    "ENGINE_RANKINGS",
    "EVAL_SEED",
    "PARTS",
    "STEP_SCORES",
    "TASKS",
    "THRESHOLD",
    "IntrospectionSettings",
    "aligned",
    "alternative_counts",
    "average_ranks",
    "calibrate_run",
    "calibration_record",
    "calibration_set",
    "chain_logits",
    "check_prompt_format",
    "comprehensiveness",
    "decision_records",
    "dependency_records",
    "describe_projection",
    "distractor_wins",
    "engine_rankings",
    "erasure_rows",
    "faithfulness_records",
    "fit_step_temperature",
    "goals",
    "gold_chain",
    "is_distractor",
    "is_true_dependency",
    "json_ready",
    "measure_introspection",
    "measure_item",
    "overlaps",
    "part_counts",
    "random_positions",
    "rank",
    "rank_by_scores",
    "ranking_metrics",
    "share",
    "spearman",
    "step_confidence_at",
    "sufficiency",
    "summarise",
]
