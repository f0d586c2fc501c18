"""The wording every view shares: numbers, quotations, step names, and the one confidence scale every view shows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:  # types only: the report's views import this package
    from ..report import Alternative, DecisionPoint, Report, SpanRef, Step, TokenRecord


Depth = Literal["novice", "intermediate", "expert"]
DEPTHS: tuple[str, ...] = get_args(Depth)
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
_COUNTS = (
    *("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    *("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"),
)
TOP_SPANS = {"novice": 1, "intermediate": 3, "expert": 5}  # how many spans (dependencies, contrasts) a depth lists


def check_depth(depth: str) -> None:
    """Raises ValueError unless depth is novice, intermediate or expert."""
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {', '.join(DEPTHS)}; got {depth!r}")


def pct(p: float) -> str:
    return f"{p:.0%}"


def num(x: float) -> str:
    """A measured number to 3 significant digits."""
    return f"{x:.3g}"


def nats(x: float) -> str:
    """A change of log-likelihood to 3 decimals (a readable 0.000, never 3.58e-06)."""
    return f"{0.0 if abs(x) < 5e-4 else x:.3f}"


def rounded(value: Any) -> Any:
    """Floats to 3 significant digits, inside lists and dicts too (evidence as a reader sees it)."""
    if isinstance(value, float):
        return float(num(value))
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(item) for item in value]
    return value


def quote(text: str) -> str:
    """Report text in quotation marks, newlines made visible."""
    return "“" + text.replace("\n", "\\n") + "”"


def _value(value: Any) -> str:
    return num(value) if isinstance(value, float) else str(rounded(value))


def pairs(values: dict[str, Any]) -> str:
    """key=value, ... with every float (nested ones too) to 3 significant digits."""
    return ", ".join(f"{key}={_value(value)}" for key, value in values.items())


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def number_word(count: int) -> str:
    """'three': a count in words (novice writes no digits of its own), digits past twenty."""
    return _COUNTS[count] if 0 <= count < len(_COUNTS) else str(count)


def count_word(count: int, noun: str) -> str:
    """'three places'."""
    return f"{number_word(count)} {noun}" + ("" if count == 1 else "s")


# --- one confidence scale -------------------------------------------------------------------------------------
# Where the report has a calibrated value it is the confidence every view shows; raw values appear at the expert
# depth only, labelled "raw". Where only the answer is calibrated, the steps' numbers are labelled raw token
# probabilities, never confidences.


def answer_confidence(report: Report) -> float | None:
    """The calibrated answer confidence where there is one, else the raw one."""
    calibrated = report.calibrated_answer_confidence
    return calibrated if calibrated is not None else report.answer_confidence


def answer_scale(report: Report) -> str:
    """'calibrated' or 'raw': which the answer confidence shown is."""
    return "calibrated" if report.calibrated_answer_confidence is not None else "raw"


def step_confidence(step: Step) -> float:
    """The step's calibrated confidence where there is one, else the mean raw probability of its tokens."""
    return step.calibrated_confidence if step.calibrated_confidence is not None else step.confidence


def steps_calibrated(report: Report) -> bool:
    """Whether every step has a calibrated confidence (then the step bars are confidences)."""
    return bool(report.steps) and all(step.calibrated_confidence is not None for step in report.steps)


def step_scale(report: Report) -> str:
    """What the step bars show."""
    return "calibrated confidence" if steps_calibrated(report) else "raw token probability"


def token_prob(item: DecisionPoint | Alternative | TokenRecord) -> float:
    """A token's probability: calibrated (at the token temperature) where measured, else raw."""
    return item.calibrated_prob if item.calibrated_prob is not None else item.prob


def tokens_calibrated(report: Report) -> bool:
    """Whether token probabilities were read at a calibrated temperature."""
    if report.token_temperature is not None:
        return True
    return any(point.calibrated_prob is not None for point in [*report.decision_points, *report.hesitations])


def calibration_note(report: Report) -> str:
    """What is calibrated and what is raw, when the views would otherwise mix scales ('' when all is calibrated)."""
    if report.calibrated_answer_confidence is None:
        return "Nothing in this report is calibrated: every probability is the model's raw token probability."
    if not steps_calibrated(report) and report.steps:
        return (
            "Only the answer's confidence is calibrated; the step bars show the raw mean token probability, "
            "which overstates how sure the model is."
        )
    return ""


# --- steps and spans ------------------------------------------------------------------------------------------


def step_name(index: int | None, depth: str) -> str:
    """'the first step' (novice) or 'step 1'; novice never writes a step number."""
    if index is None:
        return "outside the steps"
    if depth != "novice":
        return f"step {index + 1}"
    return f"the {_ORDINALS[index]} step" if 0 <= index < len(_ORDINALS) else "a later step"


def in_step(index: int | None, depth: str) -> str:
    """'in step 1' (or 'in the first step'), or 'outside the steps'."""
    return "outside the steps" if index is None else f"in {step_name(index, depth)}"


def span_source(span: SpanRef, depth: str) -> str:
    """Where a dependency span is: in the question or in an earlier step."""
    where = "the question" if span.source == "question" else step_name(span.step, depth)
    return f"from {where}" if depth == "novice" else f"in {where}"


def span_where(span: SpanRef) -> str:
    """'question' or 'step 2': a table's short form."""
    return "question" if span.source == "question" else step_name(span.step, "expert")
