"""The wording every view shares: numbers, quotations, step names, and the check a sentence's claim got."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:  # types only: the report's views import this package
    from ..report import Claim, Report, SpanRef, Step


Depth = Literal["novice", "intermediate", "expert"]
DEPTHS: tuple[str, ...] = get_args(Depth)
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
TOP_SPANS = {"novice": 1, "intermediate": 3, "expert": 5}  # how many spans (dependencies, contrasts) a depth lists
_STATUS_ORDER = {"refuted": 0, "verified": 1, "unchecked": 2}


def check_depth(depth: str) -> None:
    """Raises ValueError unless depth is novice, intermediate or expert."""
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {', '.join(DEPTHS)}; got {depth!r}")


def pct(p: float) -> str:
    return f"{p:.0%}"


def num(x: float) -> str:
    return f"{x:.3g}"


def quote(text: str) -> str:
    """Report text in quotation marks, newlines made visible."""
    return "“" + text.replace("\n", "\\n") + "”"


def _value(value: Any) -> str:
    return num(value) if isinstance(value, float) else str(value)


def pairs(values: dict[str, Any]) -> str:
    """key=value, ... with floats to 3 significant digits."""
    return ", ".join(f"{key}={_value(value)}" for key, value in values.items())


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def step_confidence(step: Step) -> float:
    """The step's confidence: the mean probability of its tokens (calibration applies to the answer only)."""
    return step.confidence


def answer_confidence(report: Report) -> float | None:
    """The calibrated answer confidence where there is one, else the raw one."""
    calibrated = report.calibrated_answer_confidence
    return calibrated if calibrated is not None else report.answer_confidence


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


def _all_claims(report: Report) -> list[Claim]:
    removed = report.validation.removed_claims if report.validation else []
    return [*report.claims, *removed]


def claim_for(report: Report, kind: str, step: int | None, **stated: Any) -> Claim | None:
    """The claim about an item: same kind and step, stating the given values (as `claims.make_claims` writes them).

    Refuted claims come first, so that a sentence is never left unmarked when any check refuted it.
    """

    def matches(claim: Claim) -> bool:
        same = claim.kind == kind and claim.step == step
        return same and all(key in claim.stated and claim.stated[key] == value for key, value in stated.items())

    found = sorted(filter(matches, _all_claims(report)), key=lambda claim: _STATUS_ORDER[claim.status])
    return found[0] if found else None


def claim_note(claim: Claim | None, depth: str) -> str:
    """The check a sentence's claim got, to append to the sentence."""
    if claim is None or (claim.status == "unchecked" and depth != "expert"):
        return ""
    if depth == "novice":
        if claim.status == "verified":
            return " (a test on the model confirmed this)"
        return " (but a test on the model did not confirm this, so do not rely on it)"
    label = {
        "verified": "verified by intervention",
        "refuted": "REFUTED by intervention, not a fact",
        "unchecked": "not checked",
    }[claim.status]
    return f" [{claim.id}: {label}]" if depth == "expert" else f" ({label})"
