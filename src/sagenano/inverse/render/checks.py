"""How the views speak of claims and their checks: what held, what was refuted and why, and what replaced it.

A claim the interventions refuted is never shown as a fact: a dependency span whose claim was refuted leaves the
tables, the heatmap and the prose, an alternative whose outcome was refuted leaves its decision point's listing, and
every refuted claim is listed only under "Refuted (not facts)". "Held" always says what held: a claim about the
model's computation, never that the answer is right.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from .words import count_word, nats, num, number_word, pct, plural, quote, step_name

if TYPE_CHECKING:  # types only: the report's views import this package
    from ..report import Alternative, Claim, DecisionPoint, DependencyScore, Report, Step

REFUTED_TITLE = "Refuted (not facts)"
HELD = "held under intervention"
_CAUSAL_NOTE = "these are claims about the model's computation; they do not say the answer is right"
_STATUS_ORDER = {"refuted": 0, "verified": 1, "unchecked": 2}


# --- finding a claim ------------------------------------------------------------------------------------------


def all_claims(report: Report) -> list[Claim]:
    """The explanation's claims, then those refinement took out."""
    removed = report.validation.removed_claims if report.validation else []
    return [*report.claims, *removed]


def claim_for(report: Report, kind: str, step: int | None, **stated: Any) -> Claim | None:
    """The engine's claim about an item: same kind and step, stating the given values (as `claims.make_claims`
    writes them). A SAGE model's own sentences are not claims about the engine's items: they are shown with its
    own explanation and among the refuted claims, never as the verdict on a row.

    Refuted claims come first, so that an item is never shown unmarked when any check refuted it.
    """

    def matches(claim: Claim) -> bool:
        same = claim.kind == kind and claim.step == step and claim.author == "engine"
        return same and all(key in claim.stated and claim.stated[key] == value for key, value in stated.items())

    found = sorted(filter(matches, all_claims(report)), key=lambda claim: _STATUS_ORDER[claim.status])
    return found[0] if found else None


def dependency_claim(report: Report, step: Step, dep: DependencyScore) -> Claim | None:
    return claim_for(report, "dependency", step.index, positions=dep.span.positions)


def alternative_claim(report: Report, point: DecisionPoint, alt: Alternative) -> Claim | None:
    return claim_for(report, "alternative", point.step, position=point.position, token_id=alt.token_id)


def decision_claim(report: Report, point: DecisionPoint) -> Claim | None:
    return claim_for(report, "decision", point.step, position=point.position)


def shown_dependencies(report: Report, step: Step) -> list[DependencyScore]:
    """The step's dependencies a view may show: every ranked span except those a masking test refuted."""
    return [dep for dep in step.dependencies if dep.status != "refuted"]  # validation marks the spans it tested


def shown_alternatives(report: Report, point: DecisionPoint) -> list[Alternative]:
    """A decision point's alternatives except those whose stated outcome the checks refuted."""
    return [alt for alt in point.alternatives if _status(alternative_claim(report, point, alt)) != "refuted"]


def hidden_alternatives(report: Report, point: DecisionPoint) -> int:
    return len(point.alternatives) - len(shown_alternatives(report, point))


def _status(claim: Claim | None) -> str:
    return "unchecked" if claim is None else claim.status


def refuted_claims(report: Report) -> list[Claim]:
    """Every refuted claim: those still in the explanation (no refinement ran) and those refinement removed."""
    return [claim for claim in all_claims(report) if claim.status == "refuted"]


def claim_tags(report: Report) -> dict[int, str]:
    """A tag per claim object (by `id()`), unique across the report: a repeated id gets '#2', '#3'."""
    seen: Counter[str] = Counter()
    tags = {}
    for claim in all_claims(report):
        seen[claim.id] += 1
        tags[id(claim)] = claim.id if seen[claim.id] == 1 else f"{claim.id}#{seen[claim.id]}"
    return tags


def tag(report: Report, claim: Claim) -> str:
    return claim_tags(report).get(id(claim), claim.id)


# --- a claim's check in words ---------------------------------------------------------------------------------


def check_label(claim: Claim | None) -> str:
    """A table cell: what the check found."""
    if claim is None or claim.status == "unchecked":
        return "untested"
    if claim.status == "refuted":
        return "refuted"
    return "held" if claim.category == "causal" else "agreed"


def claim_label(report: Report, claim: Claim | None, depth: str) -> str:
    """What a sentence's claim got, in words ('' where the depth does not say): consistency checks are noted at
    expert only, and a refuted claim points to where it is listed."""
    if claim is None or (claim.status == "unchecked" and depth != "expert"):
        return ""
    if claim.category == "consistency" and depth != "expert":
        return ""
    if depth == "novice":
        if claim.status == "verified":
            return "a test on the model's computation confirmed this"
        return "but a test on the model did not confirm this, so do not rely on it"
    if claim.status == "refuted":
        return f"refuted, see {REFUTED_TITLE}"
    if claim.status == "verified":
        return HELD if claim.category == "causal" else "read twice, agreed"
    return "not tested"


def claim_note(report: Report, claim: Claim | None, depth: str) -> str:
    """The check a sentence's claim got, to append to the sentence: ' (held under intervention)', or at expert
    ' [tag: held under intervention]'."""
    label = claim_label(report, claim, depth)
    if not label:
        return ""
    assert claim is not None
    return f" [{tag(report, claim)}: {label}]" if depth == "expert" else f" ({label})"


def refutation(claim: Claim) -> str:
    """Why a claim was refuted, from what its check measured (numbers to 3 significant digits)."""
    ev = claim.evidence
    if claim.kind == "dependency" and "effect" in ev:
        effect = ev["effect"]
        if "random_median" not in ev:
            return f"masking it changed the step by {nats(effect)} nats, with no random span to compare"
        did = "did not change the step" if effect <= 0 else "changed the step less than random spans"
        return f"masking it {did} ({nats(effect)} vs a median {nats(ev['random_median'])} nats)"
    if claim.kind == "decision" and "changed_after_chosen" in ev:
        changed = max(ev.get("changed_after", {}).values(), default=0.0)
        return (
            f"sampled continuations ended elsewhere {pct(ev['changed_after_chosen'])} of the time after the chosen "
            f"token and at most {pct(changed)} after an alternative (it needs 50 points more)"
        )
    if claim.kind == "alternative" and "sampled_agreement" in ev:
        if not ev.get("greedy", True) or not ev.get("ended", True):
            return "replaying the rollout did not give the same chain"
        return f"only {pct(ev['sampled_agreement'])} of sampled continuations ended as stated"
    if "measured_step" in ev and "least_confident_step" in claim.stated:
        measured, stated = ev["measured_step"], claim.stated["least_confident_step"]
        if measured != stated:
            found, claimed = step_name(measured, "expert"), step_name(stated, "expert")
            return f"read again the least confident step is {found}, not {claimed}"
    if "measured_prob" in ev and "prob" in claim.stated:
        return f"read again it is {num(ev['measured_prob'])}, not {num(claim.stated['prob'])}"
    return claim.check or "its check failed"


def _removed(report: Report, claim_id: str) -> Claim | None:
    removed = report.validation.removed_claims if report.validation else []
    return next((claim for claim in removed if claim.id == claim_id), None)


def replacement(report: Report, claim: Claim, depth: str) -> str:
    """'replaces the refuted claim that step 2 rests on “…”: masking it …' for a claim refinement put in ('')."""
    if claim.replaces is None:
        return ""
    old = _removed(report, claim.replaces)
    if old is None:
        return f"replaces the refuted claim {claim.replaces}"
    if old.kind == "dependency":
        what = f"that {step_name(old.step, depth)} rests on {quote(str(old.stated.get('text', '')))}"
    else:
        what = quote(old.statement)
    if depth == "novice":
        return f"it replaces an earlier guess, {quote(str(old.stated.get('text', '')))}, that failed its test"
    return f"replaces the refuted claim {what}: {refutation(old)}"


# --- the headline ---------------------------------------------------------------------------------------------


def causal_headline(report: Report, depth: str = "intermediate") -> str:
    """How many causal claims held, and that they are about the model's computation, not the answer's truth."""
    validation = report.validation
    if validation is None:
        return "Validation: not run; no claim was tested on the model."
    if depth == "novice":
        if validation.total == 0:
            return "There was nothing to test about how the model reached this answer."
        held = f"{number_word(validation.verified)} of {number_word(validation.total)}".capitalize()
        return (
            f"{held} statements about how the model reached its answer held when tested on the model. These "
            "tests check the model's reasoning, not whether the answer is right."
        )
    if validation.total == 0:
        return "No causal claim was made, so none was tested on the model (no decision point and no tested span)."
    return f"{validation.verified} of {validation.total} causal claims held under intervention ({_CAUSAL_NOTE})."


def consistency_line(report: Report, depth: str = "intermediate") -> str:
    validation = report.validation
    if validation is None or validation.consistency_total == 0:
        return ""
    if depth == "novice":
        return ""  # the numbers read twice say nothing a newcomer needs
    return (
        f"{validation.consistency_passed} of {validation.consistency_total} consistency checks agreed "
        "(numbers read twice)."
    )


def refinement_line(report: Report, depth: str = "intermediate") -> str:
    """What refinement removed and what replaced it ('' when nothing was refuted)."""
    validation = report.validation
    if validation is None or not validation.removed_claims:
        return ""
    removed, repaired = len(validation.removed_claims), validation.repaired
    if depth == "novice":
        text = f"{count_phrase(removed, 'statement')} failed {'its test' if removed == 1 else 'their tests'} and "
        text += f"{'was' if removed == 1 else 'were'} taken out"
        return text + (", and replaced where another one passed." if repaired else ".")
    text = f"{plural(removed, 'refuted claim')} {'was' if removed == 1 else 'were'} taken out of the explanation"
    if repaired:
        text += f"; {repaired} replaced by the next-ranked span that held (not counted in the score above)"
    return text + "."


def count_phrase(count: int, noun: str) -> str:
    return count_word(count, noun).capitalize()


def headline(report: Report, depth: str = "intermediate") -> list[str]:
    """The lines every view opens with after the answer: causal claims, consistency checks, refinement."""
    lines = [causal_headline(report, depth), consistency_line(report, depth), refinement_line(report, depth)]
    return [line for line in lines if line]


def refuted_lines(report: Report, depth: str) -> list[str]:
    """One line per refuted claim: its statement and why it failed (check and evidence at expert)."""
    lines = []
    for claim in refuted_claims(report):
        line = f"- {quote(claim.statement)}: refuted, {refutation(claim)}."
        if depth == "expert":
            line = f"- {tag(report, claim)} ({claim.category} {claim.kind}) {quote(claim.statement)}: refuted, "
            line += f"{refutation(claim)}."
        lines.append(line)
    return lines
