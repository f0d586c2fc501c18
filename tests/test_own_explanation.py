"""A SAGE model's own explanation: what stage 3 teaches it (only what held when the engine checked it), and how each
sentence it writes is located in the chain and checked like the engine's claims, without changing theirs."""

from __future__ import annotations

import json
import random

from conftest import copy_example
from sagenano.inverse import explain, validate_and_refine
from sagenano.inverse.own_explanation import (
    DECIDED,
    RESTS_ON,
    example_texts,
    explanation_pool,
    own_claims,
    target_text,
)
from sagenano.inverse.render import render_text
from sagenano.inverse.render.checks import dependency_claim
from sagenano.inverse.report import OwnExplanation

OPTIONS = dict(max_new_tokens=8, chat=False, reliance=False)


def explained(model, tokenizer, seed: int = 100):
    question, _ = copy_example(random.Random(seed), " Answer: ")
    return explain(model, tokenizer, question, **OPTIONS)


def with_own_explanation(report, tokenizer, text: str):
    """The report as if the model had written `text` after `<|explanation|>`, its sentences made claims."""
    report.own_explanation = OwnExplanation(text=text, mean_prob=0.9)
    report.claims.extend(own_claims(report, tokenizer))
    return report


def engine_verdicts(report) -> dict:
    claims = [*report.claims, *(report.validation.removed_claims if report.validation else [])]
    return {c.id: c.status for c in claims if c.author == "engine"}


def test_the_target_names_only_what_held_and_reads_back_as_the_same_claims(answer_copier, tokenizer):
    report = explained(answer_copier, tokenizer)
    answer_step = next(s for s in report.steps if s.is_answer)
    held = [c for c in report.claims if c.kind == "dependency" and c.status == "verified"]
    assert held, "the copier's answer rests on the question's number"
    target = target_text(report)
    assert target == RESTS_ON.format(step=answer_step.index + 1, span=json.dumps(held[0].stated["text"]))
    assert "decided" not in target, "a sure model has no decision point to name"
    read = own_claims(with_own_explanation(report, tokenizer, target), tokenizer)
    assert [(c.kind, c.step, c.stated["positions"], c.author) for c in read] == [
        ("dependency", held[0].step, held[0].stated["positions"], "model")
    ]


def test_false_and_unlocatable_sentences_are_refuted_and_change_none_of_the_engines_claims(answer_copier, tokenizer):
    report = explained(answer_copier, tokenizer)
    before = engine_verdicts(report)
    statuses = [(d.span.text, d.status) for s in report.steps for d in s.dependencies]
    answer_step = next(s for s in report.steps if s.is_answer)
    weakest = answer_step.dependencies[-1].span.text  # the least significant span: masking it changes little
    n = answer_step.index + 1
    sentences = [
        target_text(report),  # true
        RESTS_ON.format(step=n, span=json.dumps(weakest)),  # false
        RESTS_ON.format(step=n, span=json.dumps("purple elephants")),  # names nothing in the chain
        RESTS_ON.format(step=n + 7, span=json.dumps(report.answer)),  # no such step
    ]
    with_own_explanation(report, tokenizer, " ".join(sentences))
    validation = validate_and_refine(report, answer_copier, tokenizer)
    own = {c.id: c for c in [*report.claims, *validation.removed_claims] if c.author == "model"}
    assert [own[i].status for i in sorted(own)] == ["verified", "refuted", "refuted", "refuted"]
    assert "unlocated" not in own["own-2-dependency"].stated and own["own-2-dependency"].evidence["effect"] is not None
    assert "no span" in own["own-3-dependency"].stated["unlocated"]
    assert "no step" in own["own-4-dependency"].stated["unlocated"]
    assert engine_verdicts(report) == before, "the model's own sentences refine nothing of the engine's"
    assert [(d.span.text, d.status) for s in report.steps for d in s.dependencies] == statuses
    assert not any(c.replaces in own for c in report.claims)
    weakest_span = answer_step.dependencies[-1]
    assert dependency_claim(report, answer_step, weakest_span) is None, "a model's sentence is no row's verdict"
    text = render_text(report, "intermediate")
    assert "1 of its 4 checkable statements held under intervention" in text
    shown, refuted = text.split("Refuted (not facts):\n")
    assert "purple elephants" not in shown.split("The model's own explanation")[0]
    assert "purple elephants" in refuted


def test_a_decision_the_model_names_is_checked_by_sampling_after_both_tokens(hesitant_copier, tokenizer):
    report = explained(hesitant_copier, tokenizer, seed=101)
    point = next(d for d in report.decision_points if d.changes_answer)
    changing = next(a for a in point.alternatives if a.outcome != "same_answer")
    target = target_text(report)
    true = DECIDED.format(step=point.step + 1, alternative=json.dumps(changing.token), chosen=json.dumps(point.token))
    assert target.startswith(true)
    false = DECIDED.format(step=point.step + 1, alternative=json.dumps(point.token), chosen=json.dumps(point.token))
    with_own_explanation(report, tokenizer, f"{true} {false}")
    validation = validate_and_refine(report, hesitant_copier, tokenizer)
    own = sorted((c for c in [*report.claims, *validation.removed_claims] if c.author == "model"), key=lambda c: c.id)
    decided = [c for c in own if c.kind == "decision"]
    assert [c.stated["position"] for c in decided] == [point.position] * 2
    assert decided[0].stated["changing_token_ids"] == [changing.token_id]
    assert [c.status for c in decided] == ["verified", "refuted"]
    assert point.position in {d.position for d in report.decision_points}, "an own refuted sentence removes no point"


def test_lookup_drafts_hold_every_sentence_of_the_format(tokenizer):
    pool = explanation_pool(tokenizer)
    for text in example_texts():
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert any(pool[i : i + len(ids)] == ids for i in range(len(pool)))
