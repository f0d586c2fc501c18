"""The REST API's request and response bodies, and the problems each endpoint may answer with."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from ..inverse import Comparison, Counterfactual, ExplainOptions, Report, Simplification
from ..inverse.interact import MAX_SAMPLES
from ..inverse.options import MAX_QUESTION_CHARS, VISIBLE_CHARACTER, check_question
from ..inverse.render.words import Depth

MAX_NEW_TOKENS = 512  # the API's own bound; a server may allow less (`ServerSettings.max_new_tokens`)
_DEFAULTS = ExplainOptions()  # a request's defaults are the engine's


def _whole_number(value: object) -> object:
    """6.0 is the integer 6 in JSON Schema, which the published schema follows; 6.5, "6" and true stay refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_whole_number)]


class _Request(BaseModel):
    # Strict: "10", true or 10.5 for an integer, 0 or "yes" for a boolean are mistakes to report, not values to guess
    # at (10.0 is the integer 10, as JSON Schema says: `Integer`).
    model_config = ConfigDict(extra="forbid", strict=True)


Question = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_QUESTION_CHARS,
        description="the question to reason on (at least one visible character)",
        json_schema_extra={"pattern": VISIBLE_CHARACTER},  # checked, with a readable message, by check_question
    ),
]
ReportId = Annotated[str, Field(min_length=1, max_length=64, description="id returned by /v1/explain")]


class _AsksQuestion(_Request):
    question: Question
    depth: Depth = "intermediate"

    @field_validator("question")
    @classmethod
    def _visible(cls, question: str) -> str:
        check_question(question)
        return question


class ExplainRequest(_AsksQuestion):
    """A question to answer and explain, with the engine's main options."""

    max_new_tokens: Integer = Field(
        _DEFAULTS.max_new_tokens, ge=1, le=MAX_NEW_TOKENS, description="bound on the generated chain"
    )
    threshold: float = Field(
        _DEFAULTS.threshold, ge=0, le=1, description="decision score at which a token is a decision point"
    )
    max_decision_points: Integer = Field(_DEFAULTS.max_decision_points, ge=0, le=12)
    alternatives: Integer = Field(
        _DEFAULTS.alternatives, ge=1, le=10, description="alternative tokens rolled out per decision point"
    )
    rollouts: bool = _DEFAULTS.rollouts
    verify: bool = Field(_DEFAULTS.validate, description="check every claim by intervention (ValidateConsistency)")


class ExplainResponse(BaseModel):
    id: str
    url: str
    depth: Depth
    text: str = Field(description="the explanation in natural language at `depth`")
    texts: dict[str, str] = Field(description="the explanation at every depth (switch depth without a request)")
    report: Report


class CompareRequest(_Request):
    """Why the chosen token over an alternative, at one of the report's decision points."""

    report_id: ReportId
    position: Integer = Field(ge=0, description="the decision point's position in the chain")
    alternative: Integer | None = Field(None, ge=0, description="the alternative's token id (default: the likeliest)")
    depth: Depth = "intermediate"


class CompareResponse(BaseModel):
    report_id: str
    depth: Depth
    text: str
    texts: dict[str, str] = Field(description="the explanation at every depth (switch depth without a request)")
    comparison: Comparison


class CounterfactualRequest(_AsksQuestion):
    """The report's question, edited: explained again with the same options, and diffed."""

    report_id: ReportId


class CounterfactualResponse(BaseModel):
    report_id: str = Field(description="the original report")
    new_report_id: str = Field(description="the edited question's report")
    depth: Depth
    text: str
    texts: dict[str, str] = Field(description="the explanation at every depth (switch depth without a request)")
    counterfactual: Counterfactual


class SimplifyRequest(_Request):
    """Sample n chains and look for a shorter one with the same answer that passes validation."""

    report_id: ReportId
    n: Integer = Field(8, ge=1, le=MAX_SAMPLES, description="chains to sample")
    temperature: float = Field(0.8, gt=0, le=2)
    seed: Integer = Field(0, ge=0, le=2**31 - 1)
    depth: Depth = "intermediate"


class SimplifyResponse(BaseModel):
    report_id: str
    new_report_id: str | None = Field(description="the simpler chain's report, when one was found")
    depth: Depth
    text: str
    texts: dict[str, str] = Field(description="the explanation at every depth (switch depth without a request)")
    simplification: Simplification


class ReportResponse(BaseModel):
    id: str
    depth: Depth
    text: str
    texts: dict[str, str] = Field(description="the explanation at every depth (switch depth without a request)")
    report: Report


class Health(BaseModel):
    status: Literal["ok"]
    pending: int
    max_pending: int
    completed: int
    reports: int
    memory_mb: float | None = Field(description="resident memory of the server process (None where unknown)")
    threads: int = Field(description="CPU threads the model runs on (`sage-nano serve --threads`)")


class ModelInfo(BaseModel):
    source: str
    trained: bool
    architecture: str
    parameters: int
    context_length: int | None
    sage: bool
    calibration_temperature: float | None
    calibration: str | None = Field(
        description="the answer-confidence calibration: 'temperature' or 'temperature+isotonic'; None: not calibrated"
    )
    limits: dict[str, int | float]


class Problem(BaseModel):
    detail: str


ERRORS = {
    400: {"model": Problem, "description": "malformed request body"},
    404: {"model": Problem, "description": "no such report"},
    422: {"model": Problem, "description": "a field out of range, or input the model cannot take"},
    503: {"model": Problem, "description": "queue full: retry after the Retry-After header's seconds"},
    504: {"model": Problem, "description": "the work ran past the server's time limit"},
}
STREAM = {200: {"content": {"text/event-stream": {}}, "description": "progress events, then `result` or `error`"}}
