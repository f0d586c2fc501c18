"""Introspection accuracy of `sagenano.explain` on held-out ground-truth items, beside attribution baselines.

`measure_introspection(model, tokenizer, IntrospectionSettings(...))` measures, on the synthetic tasks' held-out
items, dependency tracking (eq. 7 against attention-only, gradient-only and the Figure-2 baselines), the
verification of alternative paths, decision points against the measured effect of resampling, the precision of the
causal claims against the ground truth, calibration, the answer's reliance on the chain (Lanham et al.),
faithfulness and explanation time, and returns a JSON-ready dict that `bench/introspection.py` and `sage-nano report`
print. `docs/introspection.md` defines every part, number and goal. Modules: `metrics` (pure functions), `items` (an
item's gold chain and seed), `measure` (one item; its gold chain), `own` (the model's own chain), `calibration` (the
run's calibration), `summary` (per part and method, the goals), `run` (the run and its projected time).
"""

from ..rank_correlation import average_ranks, spearman
from ..task_accuracy import EVAL_SEED, TASKS
from .calibration import calibrate_run
from .items import aligned, gold_chain, item_seed
from .measure import dependency_records, engine_rankings, faithfulness_records, measure_item
from .metrics import (
    ENGINE_RANKINGS,
    auroc,
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
from .own import (
    alternative_checks,
    alternative_counts,
    calibration_record,
    claim_records,
    decision_records,
    dependency_truth,
    reliance_record,
    resampled_answers,
    step_decision_scores,
)
from .run import (
    ISSUE_ITEMS,
    check_prompt_format,
    describe_projection,
    items_per_task,
    json_ready,
    measure_introspection,
    part_counts,
)
from .settings import PARTS, IntrospectionSettings
from .summary import (
    EFFECT_THRESHOLD,
    STEP_SCORES,
    THRESHOLD,
    goals,
    summarise,
    summarise_claims,
    summarise_decision,
    summarise_reliance,
)

__all__ = [
    "EFFECT_THRESHOLD",
    "ENGINE_RANKINGS",
    "EVAL_SEED",
    "ISSUE_ITEMS",
    "PARTS",
    "STEP_SCORES",
    "TASKS",
    "THRESHOLD",
    "IntrospectionSettings",
    "aligned",
    "alternative_checks",
    "alternative_counts",
    "auroc",
    "average_ranks",
    "calibrate_run",
    "calibration_record",
    "check_prompt_format",
    "claim_records",
    "comprehensiveness",
    "decision_records",
    "dependency_records",
    "dependency_truth",
    "describe_projection",
    "distractor_wins",
    "engine_rankings",
    "erasure_rows",
    "faithfulness_records",
    "goals",
    "gold_chain",
    "is_distractor",
    "is_true_dependency",
    "item_seed",
    "items_per_task",
    "json_ready",
    "measure_introspection",
    "measure_item",
    "overlaps",
    "part_counts",
    "random_positions",
    "rank",
    "rank_by_scores",
    "ranking_metrics",
    "reliance_record",
    "resampled_answers",
    "share",
    "spearman",
    "step_decision_scores",
    "sufficiency",
    "summarise",
    "summarise_claims",
    "summarise_decision",
    "summarise_reliance",
]
