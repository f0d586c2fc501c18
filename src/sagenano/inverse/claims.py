"""GenerateExplanation: the explanation's claims, each built from a measured number and checkable.

Four kinds (the paper's four parts): decision justifications, alternative analysis, confidence
assessment and critical dependencies. A claim states numbers (`stated`) that `validate` checks on the model.
Decision points (once rolled out), alternatives and dependencies are causal claims: an intervention (sampling from
the branch, masking a span) could refute them. Confidences are consistency checks: a number read again by another
path. The natural-language text (`render`) is made from the claims and the report.
"""

from __future__ import annotations

from .report import Claim, Report


def _step_name(step: int | None) -> str:
    return "the answer" if step is None else f"step {step + 1}"


def make_claims(report: Report, opts) -> list[Claim]:
    """All claims of the explanation, in the paper's order of its four parts."""
    return [
        *decision_claims(report, opts),
        *(alternative_claims(report) if opts.rollouts else []),
        *confidence_claims(report),
        *dependency_claims(report, opts.critical_dependencies),
    ]


def _prob(prob: float, calibrated: float | None) -> float:
    return prob if calibrated is None else calibrated


def decision_claims(report: Report, opts) -> list[Claim]:
    return [_decision_claim(point, opts) for point in report.decision_points]


def _decision_claim(point, opts) -> Claim:
    """Rolled out: "going another way here changes the answer", tested by sampling from the branches (causal).
    Not rolled out: "the choice was close", its score read again (a consistency check)."""
    where = (
        f"At {_step_name(point.step)} the model wrote {point.token!r} ({_prob(point.prob, point.calibrated_prob):.0%})"
    )
    stated = {"position": point.position, "prob": round(point.prob, 3), "score": round(point.score, 3)}
    if point.changes_answer:
        others = [a for a in point.alternatives if a.outcome != "same_answer"]
        listed = ", ".join(f"{a.token!r} ({_prob(a.prob, a.calibrated_prob):.0%})" for a in others)
        return Claim(
            id=f"decision-{point.position}",
            kind="decision",
            category="causal",
            step=point.step,
            statement=f"{where} where {listed} also fit: the answer depends on this choice. Continuations "
            f"sampled after such an alternative end elsewhere far more often than after {point.token!r}.",
            stated={**stated, "changing_token_ids": [a.token_id for a in others]},
        )
    return Claim(
        id=f"decision-{point.position}",
        kind="decision",
        step=point.step,
        statement=f"{where}: a close call, its decision score {point.score:.2f} reaches the threshold "
        f"{opts.threshold:g}.",
        stated=stated,
    )


_LEADS_TO = {
    "same_answer": "to the same answer ({})",
    "different_answer": "to a different answer ({})",
    "no_answer": "to no answer",
}


def alternative_claims(report: Report) -> list[Claim]:
    return [
        Claim(
            id=f"alternative-{point.position}-{alt.token_id}",
            kind="alternative",
            step=point.step,
            category="causal",
            statement=f"Choosing {alt.token!r} (probability {_prob(alt.prob, alt.calibrated_prob):.0%}) instead of "
            f"{point.token!r} at {_step_name(point.step)} leads {_LEADS_TO[alt.outcome].format(alt.answer)}.",
            stated={"position": point.position, "token_id": alt.token_id, "answer": alt.answer, "outcome": alt.outcome},
        )
        for point in report.decision_points
        for alt in point.alternatives
    ]


def confidence_claims(report: Report) -> list[Claim]:
    claims = [
        Claim(
            id=f"confidence-step-{step.index}",
            kind="confidence",
            step=step.index,
            statement=f"The raw mean token probability of {_step_name(step.index)} is {step.confidence:.0%}.",
            stated={"prob": round(step.confidence, 3), "tokens": [step.token_start, step.token_end]},
        )
        for step in report.steps
    ]
    if report.answer_confidence is not None:
        answer_step = next((s.index for s in report.steps if s.is_answer), None)
        claims.append(
            Claim(
                id="confidence-answer",
                kind="confidence",
                step=answer_step,
                statement=f"The model gave its answer {report.answer!r} raw probability "
                f"{report.answer_confidence:.0%}.",
                stated={
                    "prob": round(report.answer_confidence, 3),
                    "answer": report.answer,
                    "tokens": report.answer_tokens,
                },
            )
        )
    return claims


def dependency_claims(report: Report, per_step: int) -> list[Claim]:
    return [
        dependency_claim(step.index, dependency) for step in report.steps for dependency in step.dependencies[:per_step]
    ]


def dependency_claim(step: int, dependency) -> Claim:
    """ "Step k rests on this span": masking it must change the step more than masking random spans (causal)."""
    span = dependency.span
    source = "the question" if span.source == "question" else _step_name(span.step)
    return Claim(
        id=f"dependency-{step}-at-{span.positions[0]}",
        kind="dependency",
        step=step,
        statement=f"{_step_name(step).capitalize()} rests on {span.text!r} in {source}: removing it changes the "
        "step more than removing random spans of the same length.",
        stated={"positions": span.positions, "text": span.text, "share": round(dependency.share, 3)},
    )
