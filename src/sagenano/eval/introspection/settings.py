"""What an introspection run measures and with what: `IntrospectionSettings` and the parts it times."""

from __future__ import annotations

from dataclasses import dataclass

from ...inverse.confidence import Calibration
from ..baselines import BASELINES
from ..task_accuracy import EVAL_SEED
from .metrics import ENGINE_RANKINGS

PARTS = ("dependency", "baselines", "faithfulness", "own", "claims", "alternatives_low", "decision")  # timed apart


@dataclass(frozen=True)
class IntrospectionSettings:
    """What a run measures and with what (`docs/introspection.md` defines every part)."""

    model_name: str = "sage"  # the reports' model name
    n: int = 500  # held-out items per task for dependency tracking (gold chains, and the baselines)
    own_items: int = 80  # items per task whose own chain is explained: alternatives, claims, calibration, reliance
    decision_items: int = 25  # items per task for decision points and the low-threshold alternatives (also own)
    faithfulness_items: int = 80  # items per task for faithfulness (at most n: it reads the gold chains' rankings)
    calibration_items: int = 100  # calibration items per task, seed `seed` + 1000 (0: the stored calibration only)
    max_new_tokens: int = 160  # of every own chain (the calibration set's chains are `calibration_records`')
    resamples: int = 8  # samples per cut of the chain (decision points)
    seed: int = EVAL_SEED  # item seed; also seeds explain, the resamples and the baselines' sampling
    low_threshold: float = 0.05  # the second decision threshold of the alternatives
    baselines: tuple[str, ...] = tuple(BASELINES)  # the Figure-2 baselines ranked beside eq. 7 (parts 1 and 5)
    baseline_samples: int = 64  # LIME's and SHAP's perturbations per step
    check_samples: int = 16  # continuations sampled (another seed) to check each verified alternative claim
    calibration: Calibration | None = None  # set by `measure_introspection`: stored or fitted; None: raw only

    def __post_init__(self) -> None:
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; choose from {', '.join(BASELINES)} (or none)")
        if self.n < 1:
            raise ValueError(f"n must be at least 1 item per task, got {self.n}")
        for name in ("own_items", "decision_items", "faithfulness_items", "calibration_items"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("resamples", "baseline_samples", "check_samples", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def methods(self) -> tuple[str, ...]:
        """Every ranking of parts 1 and 5: the engine's, then the baselines."""
        return (*ENGINE_RANKINGS, *self.baselines)
