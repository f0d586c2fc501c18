"""ExplainOptions: how `explain` measures. Every option is recorded in the report, so the checks, the views and
a rerun read the same typed values; the command line and the REST API take their defaults from here. It imports no
torch (the registries it checks names against load when a name is checked), so `sage-nano --help` stays fast."""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .confidence import Calibration

if TYPE_CHECKING:
    from transformers import PreTrainedModel

AUTO = "auto"
MAX_QUESTION_CHARS = 4000
# A question needs one visible character: not white space, not a control character, not an invisible format
# character (zero-width spaces and joiners, the byte-order mark, direction marks). The REST API publishes it
# as the question's JSON-schema pattern.
VISIBLE_CHARACTER = r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]"
_VISIBLE = re.compile(VISIBLE_CHARACTER)


def check_question(question: Any) -> str:
    """The question, stripped, or a ValueError that says what is wrong with it (here, torch-free, so the command
    line refuses a bad question before any model loads)."""
    if not isinstance(question, str):
        raise ValueError(f"the question must be text, got {type(question).__name__}")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("the question is not valid UTF-8 text; re-encode it as UTF-8") from error
    if not _VISIBLE.search(question):
        raise ValueError("the question has no visible text; ask something, e.g. 'If 3x + 2 = 14, what is x?'")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"the question has {len(question)} characters; the limit is {MAX_QUESTION_CHARS}")
    return question.strip()


with warnings.catch_warnings():
    # `validate` is the option's public name (explain(..., validate=False)); pydantic warns that it shadows the
    # deprecated classmethod BaseModel.validate, which an instance's field value overrides.
    warnings.filterwarnings("ignore", message='Field name "validate"')

    class ExplainOptions(BaseModel):
        """How `explain` measures; every option is recorded in the report.

        Attributes:
            max_new_tokens: bound on the generated chain.
            threshold: a token is a candidate decision point when its decision score reaches this.
            decision_score: a key of `decisions.DECISION_SCORES` — "margin" (1 − the top-1/top-2 margin),
                "alternatives" (the probability of the other tokens), both on `decision_temperature`'s scale,
                "entropy" (the raw
                distribution's entropy over log(vocabulary size)), "meta" (SAGE's meta-cognitive head, at step
                starts), "combined" (the larger of margin and meta) — or "auto" (what measured best on development
                items: `decisions.default_decision_score`).
            max_decision_points: show at most this many, the highest-scoring.
            decision_temperature: the distribution the decision score and `min_alternative_prob` read: "model" (the
                model's own, temperature 1: where sampling from it goes another way; it tracked the measured
                resampling effect better on development items, docs/measurements.md) or "calibrated" (the
                calibration's token temperature). The report shows calibrated probabilities either way.
            alternatives: at most this many alternative tokens per decision point.
            min_alternative_prob: an alternative's probability must reach this (no 1e-7 tokens).
            rollouts: roll every alternative out to its own answer; a candidate is shown as a decision point only
                when one of its alternatives changes the answer (else it is listed as a hesitation).
            samples: sampled continuations per branch (the chosen token and each alternative) that test the
                decision and alternative claims.
            rollout_memory_mb: bound on the rollouts' KV caches: each branch is counted as holding a cache as long as
                the chain (an upper bound where shared-prefix attention keeps the chain's keys and values once and a
                row only its own positions), and as many branches are generated together as fit (at least one).
                Batching all of them is fastest on small models; for large ones the bound keeps memory in hand
                (bench/explain_memory.py).
            attention_aggregate: the w_ij of eq. 7, a key of `significance.ATTENTION_AGGREGATES` — "mean" (all
                layers and heads), "last" (last layer), "rollout" (attention rollout over layers) — or "group:<name>"
                (one head group, all layers), or "auto" (SAGE's reasoning heads, group:reasoning, where the model has
                them; else mean).
            gradient_layer: the hidden state h_j of eq. 7 (0 = the embeddings: every path from the input counts; a
                deeper layer sees only what later layers still read from position j; the last layer's output reaches
                no other position, so it carries no dependency). None: the middle layer's output
                (num_hidden_layers // 2) on SAGE models, the embeddings (0) on others; chosen on development items
                (bench/eq7_options.py, docs/measurements.md).
            entropy_term: "step" (the step's mean normalised token entropy, eq. 7's entropy factor) or "none".
            span_aggregate: how token scores combine into a span's: mean (chosen on development items), max or sum.
            dependency_steps: "all" steps, or only the "decisions" (steps with a decision point, and the answer).
            critical_dependencies: dependency claims per step (its top-ranked spans).
            validate: check every claim by intervention (ValidateConsistency) and refine below `refine_below`.
            random_controls: random spans ablated per dependency claim as its control.
            refine_below: a validation score (causal claims that held, as first stated) below which the explanation
                is marked weak. Refuted claims are always taken out of it, and refuted dependencies repaired.
            calibration: the model's calibration (`load_model(...).calibration`: the answer's and the steps'
                temperatures and isotonic curves, and the question bound); None: raw probabilities only.
            own_explanation: on SAGE models, let the model write its own explanation and check it.
            reliance: test whether the answer rests on the chain (early answering, a mistake, filler).
            chain: explain this chain (the text that follows the prompt, e.g. a reference solution) instead of
                generating one; the model's own probabilities, alternatives and attention are measured along it.
            step_strategy / chat: how the chain is cut into steps; whether to use the chat template.
            seed: seed of the random controls.
        """

        model_config = ConfigDict(extra="forbid", frozen=True)

        max_new_tokens: int = Field(160, ge=1)
        threshold: float = Field(0.3, ge=0, le=1)
        decision_score: str = AUTO
        max_decision_points: int = Field(6, ge=0)
        alternatives: int = Field(3, ge=1)
        decision_temperature: Literal["model", "calibrated"] = "model"
        min_alternative_prob: float = Field(0.02, ge=0, le=1)
        rollouts: bool = True
        samples: int = Field(4, ge=1, le=64)
        rollout_memory_mb: float = Field(512.0, gt=0)
        attention_aggregate: str = AUTO
        gradient_layer: int | None = None
        entropy_term: Literal["step", "none"] = "step"
        span_aggregate: str = "mean"
        dependency_steps: Literal["all", "decisions"] = "all"
        critical_dependencies: int = Field(1, ge=0)
        validate: bool = True
        random_controls: int = Field(4, ge=1)
        refine_below: float = Field(0.8, ge=0, le=1)
        calibration: Calibration | None = None
        own_explanation: bool = True
        reliance: bool = True
        chain: str | None = None
        step_strategy: str = "auto"
        chat: bool | None = None
        seed: int = 0

        # The registries that name the valid choices load with their modules (torch), only when a name is checked.

        @field_validator("decision_score")
        @classmethod
        def _known_decision_score(cls, name: str) -> str:
            from .decisions import DECISION_SCORES

            return _auto_or_one_of("decision score", name, DECISION_SCORES)

        @field_validator("step_strategy")
        @classmethod
        def _known_step_strategy(cls, name: str) -> str:
            from ..steps import STEP_STRATEGIES

            return _auto_or_one_of("step strategy", name, STEP_STRATEGIES)

        @field_validator("attention_aggregate")
        @classmethod
        def _known_attention_aggregate(cls, name: str) -> str:
            from .significance import check_attention_aggregate

            if name != AUTO:
                check_attention_aggregate(name)
            return name

        @field_validator("span_aggregate")
        @classmethod
        def _known_span_aggregate(cls, name: str) -> str:
            from .significance import check_span_aggregate

            check_span_aggregate(name)
            return name

        @classmethod
        def of(cls, **options: Any) -> ExplainOptions:
            """The options from keyword arguments, or a ValueError that names each bad one (and the known names)."""
            unknown = sorted(set(options) - set(cls.model_fields))
            if unknown:
                raise ValueError(f"unknown option(s) {unknown}; the options are {list(cls.model_fields)}")
            try:
                return cls(**options)
            except ValidationError as error:
                raise ValueError("; ".join(_problem(e) for e in error.errors())) from None

        def resolved(self, model: PreTrainedModel) -> ExplainOptions:
            """These options with every "auto" / None replaced by what it means for `model` (the report records
            these)."""
            from ..attention import head_groups
            from ..decoding import is_sage
            from .decisions import default_decision_score

            attention = self.attention_aggregate
            if attention == AUTO:
                attention = "group:reasoning" if "reasoning" in head_groups(model) else "mean"
            layer = self.gradient_layer
            if layer is None:
                layer = model.config.num_hidden_layers // 2 if is_sage(model) else 0
            score = default_decision_score(model) if self.decision_score == AUTO else self.decision_score
            return self.model_copy(
                update={"attention_aggregate": attention, "gradient_layer": layer, "decision_score": score}
            )


def _auto_or_one_of(what: str, name: str, registry: dict) -> str:
    """`name` when it is "auto" or a key of `registry`, else a ValueError that lists the choices."""
    if name != AUTO and name not in registry:
        raise ValueError(f"unknown {what} {name!r}; choose one of {[AUTO, *registry]}")
    return name


def _problem(error: dict) -> str:
    """One pydantic error as a sentence: the option, then what is wrong with it (our own checks name the value)."""
    name = ".".join(str(part) for part in error["loc"])
    if error["type"] == "value_error":
        message = error["msg"].removeprefix("Value error, ")
        return message if message.startswith(name) else f"{name}: {message}"
    return f"{name}: {error['msg']} (got {error.get('input')!r})"
