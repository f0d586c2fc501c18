"""The explanation report: what `explain` measured, the claims made from it, and how each was checked.

Pydantic models, so the report has a JSON schema (`Report.json_schema()`), validates when read back
(`Report.from_json`) and is the same object the REST API serves. Every number in it was measured on
the model by the run that wrote it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .options import ExplainOptions
from .render.words import Depth

SCHEMA_VERSION = 2
ClaimStatus = Literal["unchecked", "verified", "refuted"]
# Causal claims say what an intervention on the model would change, and one could refute them; consistency checks
# read a reported number again by another code path (they catch bugs, not wrong explanations).
ClaimCategory = Literal["causal", "consistency"]
# The category of each kind of claim; a decision claim is causal once rolled out (its alternatives change the answer).
KIND_CATEGORY: dict[str, ClaimCategory] = {"alternative": "causal", "dependency": "causal", "confidence": "consistency"}
Outcome = Literal["same_answer", "different_answer", "no_answer"]


class StrictModel(BaseModel):
    """A pydantic schema that refuses unknown fields (a typo in a stored report is an error, not silence)."""

    model_config = ConfigDict(extra="forbid")


class TokenRecord(StrictModel):
    """One generated token with its measured probability."""

    index: int
    id: int
    token: str
    prob: float = Field(description="P(token | prefix) under the model (raw)")
    calibrated_prob: float | None = Field(
        default=None, description="P(token | prefix) at the calibration's token temperature (None: not calibrated)"
    )
    entropy: float = Field(description="entropy of the next-token distribution / log(vocabulary size), 0..1")
    step: int | None = Field(description="index of the step the token belongs to (None: outside every step)")


class Alternative(StrictModel):
    """A token the model could have chosen at a decision point, rolled out greedily to its own answer."""

    token: str
    token_id: int
    prob: float = Field(description="raw probability")
    calibrated_prob: float | None = Field(default=None, description="probability at the token temperature")
    chain: str = Field(description="the whole chain with this token forced in, continued greedily")
    ids: list[int] = Field(default_factory=list, description="the forced token and its greedy continuation")
    answer: str | None
    outcome: Outcome


class DecisionPoint(StrictModel):
    """A generated token where the model could plausibly have gone another way (score ≥ threshold). It is shown as a
    decision point when going another way changes where the chain ends (`changes_answer`); otherwise it is kept as a
    hesitation that did not matter."""

    position: int = Field(description="index of the token in the generated chain")
    step: int | None
    token: str
    prob: float = Field(description="raw probability of the chosen token")
    calibrated_prob: float | None = Field(default=None, description="its probability at the token temperature")
    score: float = Field(description="the decision score that crossed the threshold (see `Report.options`)")
    entropy: float = Field(description="normalised entropy of the next-token distribution, 0..1")
    margin: float = Field(description="top-1 minus top-2 probability")
    meta_score: float | None = Field(default=None, description="SAGE meta-cognitive head's decision probability")
    alternatives: list[Alternative] = Field(default_factory=list)
    changes_answer: bool | None = Field(
        default=None, description="an alternative's rollout ends in another answer or none (None: not rolled out)"
    )


class SpanRef(StrictModel):
    """A piece of the input the chain may rest on: a number or clause of the question, or of an earlier step."""

    source: Literal["question", "step"]
    step: int | None = Field(description="the earlier step's index when source is 'step'")
    start: int = Field(description="character offset in the question, or in the step's text")
    end: int
    text: str
    kind: Literal["number", "text"]
    positions: list[int] = Field(description="token positions that cover it in the full sequence (prompt + chain)")


class DependencyScore(StrictModel):
    """How much a step rests on a span: eq. 7 significance and its two measured factors."""

    span: SpanRef
    significance: float = Field(description="attention × gradient norm × step entropy (eq. 7), span aggregate")
    share: float = Field(description="significance / the step's total over all spans")
    attention: float
    gradient: float
    status: ClaimStatus = Field(
        default="unchecked", description="the masking test's verdict when a claim was made about this span"
    )


class Step(StrictModel):
    """One reasoning step of the chain (the answer is the last step when the model writes one)."""

    index: int
    text: str
    token_start: int
    token_end: int
    confidence: float = Field(description="mean raw probability of the step's tokens")
    calibrated_confidence: float | None = Field(
        default=None, description="the calibrated probability that the step is right (None: not calibrated)"
    )
    min_prob: float
    entropy: float = Field(description="mean normalised entropy of the step's tokens")
    meta_confidence: float | None = Field(default=None, description="SAGE meta-cognitive head's P(step correct)")
    is_answer: bool = False
    dependencies: list[DependencyScore] = Field(default_factory=list, description="ranked, most significant first")


class Claim(StrictModel):
    """One statement of the explanation, with the intervention that checked it."""

    id: str
    kind: Literal["decision", "alternative", "confidence", "dependency"]
    category: ClaimCategory = Field(
        default=None,
        validate_default=True,
        description="causal: an intervention could refute it; consistency: a "
        "number read again by another path (default: by kind; a decision claim is causal once rolled out)",
    )
    step: int | None
    statement: str = Field(description="the claim in plain words, built only from measured numbers")
    stated: dict[str, Any] = Field(description="the numbers the claim states")
    check: str = Field(default="", description="how the claim was checked")
    evidence: dict[str, Any] = Field(default_factory=dict, description="what the check measured")
    status: ClaimStatus = "unchecked"
    replaces: str | None = Field(default=None, description="the refuted claim this one replaced in refinement")
    author: Literal["engine", "model"] = Field(
        default="engine",
        description="engine: stated from the engine's measurements; model: a sentence of the SAGE "
        "model's own explanation",
    )

    @field_validator("category", mode="before")
    @classmethod
    def _category_of_kind(cls, category: str | None, info: ValidationInfo) -> str:
        by_kind = KIND_CATEGORY.get(info.data.get("kind", ""))
        if category is None:
            return by_kind or "consistency"
        if by_kind is not None and category != by_kind:
            raise ValueError(f"a {info.data['kind']} claim is {by_kind}, not {category}")
        return category


class Validation(StrictModel):
    """ValidateConsistency's result: the share of causal claims, as first stated, that held under intervention
    (refinement cannot raise it), and apart from it how many consistency checks (numbers read again by another path)
    agreed."""

    score: float = Field(description="verified / total over the causal claims as first stated (1.0 when none)")
    verified: int = Field(description="causal claims that held")
    refuted: int = Field(description="causal claims the interventions refuted")
    total: int = Field(description="causal claims, as first stated")
    consistency_passed: int = 0
    consistency_total: int = 0
    repaired: int = Field(default=0, description="refuted dependencies replaced by a next-ranked span that held")
    removed_claims: list[Claim] = Field(
        default_factory=list, description="refuted claims taken out of the explanation (never shown as facts)"
    )
    threshold: float = Field(description="`refine_below`: a score below it marks the explanation as weak")


class Familiarity(StrictModel):
    """How much the question looks like what the model was trained on (measured, not guessed)."""

    unusual: bool = Field(description="True when any reason below holds: the report says so at the top")
    reasons: list[str] = Field(default_factory=list, description="what was measured, in words")
    question_nll: float | None = Field(default=None, description="mean negative log-likelihood per question token")
    typical_nll: float | None = Field(
        default=None, description="the calibration's bound: held-out questions' 99th percentile (None: unknown)"
    )
    untrained_tokens: list[str] = Field(default_factory=list, description="question tokens the tokenizer does not know")
    unseen_tokens: list[str] = Field(
        default_factory=list, description="question tokens that no calibration question (the training tasks) has"
    )


class EarlyAnswer(StrictModel):
    """The answer read when the chain is cut after `steps` steps (0: no chain at all)."""

    steps: int
    answer: str | None


class Intervention(StrictModel):
    """The chain changed on purpose and the answer read again."""

    step: int | None = Field(description="the changed step (None: the whole chain)")
    change: str = Field(description="what was changed, in words")
    answer: str | None
    changed_answer: bool


class Reliance(StrictModel):
    """Does the answer rest on the chain it shows? The tests of Lanham et al. 2023: early answering (cut the chain
    after each step and ask for the answer), a mistake inserted in a step (the rest regenerated), filler in place of
    the chain."""

    early_answers: list[EarlyAnswer] = Field(default_factory=list)
    settled_after: int | None = Field(
        default=None,
        description="the fewest steps after which cutting the chain gives the final answer, and every "
        "longer cut too (0: the answer does not need the chain; None: inconclusive, the whole chain cued did not "
        "give the report's answer)",
    )
    mistakes: list[Intervention] = Field(default_factory=list)
    filler: Intervention | None = None
    rests_on_chain: bool | None = Field(
        default=None,
        description="the answer changes when the chain is cut early or a mistake is put into it (None: inconclusive); "
        "filler is reported, not counted: an answer that changes after filler may only show that filler is unlike "
        "anything the model read",
    )


class OwnExplanation(StrictModel):
    """The explanation a SAGE model trained with stage 3 writes itself, scored like the rest."""

    text: str
    mean_prob: float


class Report(StrictModel):
    """Everything `sagenano.explain` measured about one reasoning chain, and the checked explanation."""

    schema_version: int = SCHEMA_VERSION
    model: str
    question: str
    prompt: str
    prompt_ids: list[int]
    chain: str
    finish_reason: str
    answer: str | None
    answer_tokens: list[int] = Field(default_factory=list, description="the generated tokens that spell the answer")
    answer_confidence: float | None = Field(description="probability of the answer's tokens together")
    calibrated_answer_confidence: float | None = None
    temperature: float | None = Field(default=None, description="the fitted calibration temperature, when known")
    calibration: str | None = Field(
        default=None, description="how calibrated_answer_confidence was made: 'temperature' or 'temperature+isotonic'"
    )
    tokens: list[TokenRecord]
    steps: list[Step]
    decision_points: list[DecisionPoint]
    hesitations: list[DecisionPoint] = Field(
        default_factory=list,
        description="tokens whose score reached the threshold but whose rolled-out alternatives all led to "
        "the same answer: the model hesitated there, and it did not matter",
    )
    top_decision_score: float | None = Field(
        default=None, description="the highest decision score of any token in a step (None: no such token)"
    )
    token_temperature: float | None = Field(
        default=None, description="the temperature calibrated token probabilities were read at (None: raw)"
    )
    familiarity: Familiarity | None = None
    reliance: Reliance | None = None
    claims: list[Claim]
    validation: Validation | None = None
    own_explanation: OwnExplanation | None = None
    options: ExplainOptions = Field(
        default_factory=ExplainOptions, description='the options the report was made with, every "auto" resolved'
    )
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per phase")

    # --- reading and writing ------------------------------------------------------------------------

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> Report:
        """Reads a report back, validating it against the schema (a wrong or newer version is refused)."""
        data = json.loads(text)
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise ValueError(f"report schema version {version!r} is not {SCHEMA_VERSION}; rerun `sage-nano explain`")
        return cls.model_validate(data)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        return cls.model_json_schema()

    # --- views ------------------------------------------------------------------------------------------

    def text(self, depth: Depth = "intermediate") -> str:
        """The explanation in natural language at a depth: novice, intermediate or expert."""
        from .render import render_text

        return render_text(self, depth)

    def show(self, depth: Depth = "intermediate", console=None) -> None:
        """Prints the report in the terminal (rich)."""
        from .render import show

        show(self, depth, console)

    def to_html(self, depth: Depth = "intermediate") -> str:
        """A self-contained HTML page with the chain, decision points and a dependency heatmap."""
        from .render import render_html

        return render_html(self, depth)

    def _repr_html_(self) -> str:
        from .render import render_html

        return render_html(self, "intermediate", fragment=True)

    def claim(self, claim_id: str) -> Claim:
        for claim in self.claims:
            if claim.id == claim_id:
                return claim
        raise KeyError(f"no claim {claim_id!r}; the report has {[c.id for c in self.claims]}")
