"""What a report says about its own limits: an unfamiliar question, whether the answer rests on the chain, and the
hesitations that did not matter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .words import count_word, quote, step_name

if TYPE_CHECKING:  # types only: the report's views import this package
    from ..report import Intervention, Report

RELIANCE_TITLE = "Does the answer rest on the chain?"
RELIANCE_HEADERS = ("Test", "Answer", "Effect")


def familiarity_notice(report: Report) -> str:
    """The notice every view opens with when the question is unlike the model's training ('' otherwise)."""
    familiarity = report.familiarity
    if familiarity is None or not familiarity.unusual:
        return ""
    reasons = "; ".join(familiarity.reasons)
    return (
        "This question is unlike what the model was trained on"
        + (f": {reasons}" if reasons else "")
        + ". Treat the answer and the explanation with caution."
    )


def hesitation_line(report: Report, depth: str) -> str:
    """One line for the candidates whose alternatives all gave the same answer ('' when there are none)."""
    count = len(report.hesitations)
    if count == 0:
        return ""
    if depth == "novice":
        return f"It also hesitated at {count_word(count, 'other place')}, but those did not change the answer."
    where = "place" if count == 1 else "places"
    return f"The model also hesitated at {count} {where} that did not change the answer."


# --- reliance -------------------------------------------------------------------------------------------------


def _answer(answer: str | None) -> str:
    return quote(answer) if answer is not None else "no answer"


def _cut(steps: int) -> str:
    return "no chain at all" if steps == 0 else f"cut after {step_name(steps - 1, 'expert')}"


def reliance_rows(report: Report) -> list[tuple[str, str, str]]:
    """(test, answer, effect) per test: the early answers, each inserted mistake, the filler."""
    reliance = report.reliance
    if reliance is None:
        return []
    rows = [
        (_cut(early.steps), _answer(early.answer), "final answer" if early.answer == report.answer else "different")
        for early in reliance.early_answers
    ]
    changes = [("mistake", mistake) for mistake in reliance.mistakes]
    changes += [("filler", reliance.filler)] if reliance.filler is not None else []
    for what, change in changes:
        rows.append(
            (f"{what}: {change.change}", _answer(change.answer), "changed" if change.changed_answer else "kept")
        )
    return rows


def reliance_text(report: Report, depth: str) -> str:
    """The faithfulness tests in words (a small table at expert); '' when they did not run."""
    reliance = report.reliance
    if reliance is None:
        return "Reliance on the chain: not measured." if depth == "expert" else ""
    if depth == "expert":
        table = text_table(RELIANCE_HEADERS, reliance_rows(report))
        return f"{RELIANCE_TITLE}\n{settled_text(report, depth)}\n{table}"
    sentences = [settled_text(report, depth)]
    sentences += [_change_sentence(change, depth) for change in reliance.mistakes]
    if reliance.filler is not None:
        sentences.append(_change_sentence(reliance.filler, depth))
    if reliance.rests_on_chain is True:
        sentences.append("So the answer rests on the chain it shows.")
    elif reliance.rests_on_chain is False:
        sentences.append("So the answer does not rest on the chain it shows: the chain may not be how it got there.")
    return f"{RELIANCE_TITLE} " + " ".join(sentences)


def settled_text(report: Report, depth: str) -> str:
    """From which step on the answer is settled, and what the model answered when cut before it."""
    reliance = report.reliance
    if reliance is None:
        return ""
    settled = reliance.settled_after
    before = [e for e in reliance.early_answers if settled is None or e.steps < settled]
    if depth == "novice":
        earlier = " or ".join(dict.fromkeys(_answer(e.answer) for e in before))
        if settled == 0:
            return "No: the model gives the same answer with no reasoning at all."
        if settled is None:
            cut = f" (it would have answered {earlier})" if earlier else ""
            return f"Cut short at any point, the model would not have given this answer{cut}."
        cut = f"; cut short before that, it would have answered {earlier}" if earlier else ""
        return f"Yes: the answer was settled only after {step_name(settled - 1, depth)}{cut}."
    earlier = ", ".join(f"{_answer(e.answer)} ({_cut(e.steps)})" for e in before)
    if settled == 0:
        return f"No: with no chain at all the model already answers {_answer(report.answer)}."
    if settled is None:
        listed = f": {earlier}" if earlier else ""
        return f"Not before its end: cut after any earlier step, the model answers differently{listed}."
    cut = f"; cut earlier, it answers {earlier}" if earlier else ""
    return f"Yes, from {step_name(settled - 1, depth)} on{cut}."


def _change_sentence(change: Intervention, depth: str) -> str:
    """What a mistake (or filler) did to the answer."""
    if change.step is None:
        what = "Filler in place of the chain"
        if depth != "novice":
            what += f" ({change.change})"
    elif depth == "novice":
        what = f"A small mistake put into {step_name(change.step, depth)}"
    else:
        what = f"A mistake put into the chain ({change.change})"
    if change.changed_answer:
        return f"{what} changed the answer to {_answer(change.answer)}."
    return f"{what} left the answer unchanged."


def text_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A small plain-text table: columns padded to their widest cell."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [headers, tuple("-" * width for width in widths), *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )
