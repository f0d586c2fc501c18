"""The interactions (why A over B, what if, a simpler way) on real models: a tiny Llama trained to copy a number,
and the SAGE model that ships with the package."""

import random

import pytest
import torch

from conftest import copy_example
from sagenano.decoding import Chain
from sagenano.inverse import explain
from sagenano.inverse.interact import question_edits, simpler_way, what_if, why_over
from sagenano.loading import load_model

EQUATION = "If 3x + 2 = 14, what is x?"
PADDED_CHAIN = "3x = 14 - 2 = 12<|step|>3x = 12<|step|>3x = 12<|step|>x = 12 / 3 = 4<|answer|>4"


@pytest.fixture(scope="module")
def copier(answer_copier):
    return answer_copier


@pytest.fixture(scope="module")
def shipped():
    loaded = load_model()
    assert loaded.trained, "these tests need the trained model that ships with the package"
    return loaded


def _answer_point(report):
    return next(d for d in report.decision_points if d.token.strip() == report.answer)


def test_why_over_credits_the_copied_number_and_confirms_it_by_masking(copier, tokenizer):
    for seed in (100, 101, 102):
        question, _ = copy_example(random.Random(seed), " Answer: ")
        # threshold 0: every generated token is a decision point, the copied number among them
        report = explain(copier, tokenizer, question, max_new_tokens=8, chat=False, threshold=0.0,
                         max_decision_points=12, validate=False, min_alternative_prob=0.0)  # fmt: skip
        point = _answer_point(report)
        comparison = why_over(copier, tokenizer, report, point.position)
        top = comparison.favour_chosen[0].span
        assert (top.source, top.kind, top.text) == ("question", "number", report.answer)
        check = next(c for c in comparison.checks if c.side == "chosen")
        assert check.span == top and check.verified and check.log_odds_after < check.log_odds_before
        # the log-odds are what an independent forward pass gives
        chain = Chain(torch.tensor(report.prompt_ids), torch.tensor([t.id for t in report.tokens]))
        inputs = torch.cat([chain.prompt_ids, chain.token_ids])[: chain.prompt_len + point.position]
        with torch.no_grad():
            logp = copier(input_ids=inputs[None]).logits[0, -1].log_softmax(-1)
        expected = float(logp[comparison.chosen.token_id] - logp[comparison.alternative.token_id])
        assert comparison.log_odds == pytest.approx(expected, abs=1e-4)
        alternative = point.alternatives[0]
        assert (comparison.alternative.answer, comparison.alternative.chain) == (alternative.answer, alternative.chain)


def test_why_over_texts_at_three_depths(copier, tokenizer):
    question, _ = copy_example(random.Random(100), " Answer: ")
    report = explain(copier, tokenizer, question, max_new_tokens=8, chat=False, threshold=0.0, validate=False,
                     min_alternative_prob=0.0)  # fmt: skip
    comparison = why_over(copier, tokenizer, report, _answer_point(report).position)
    texts = {depth: comparison.text(depth) for depth in ("novice", "intermediate", "expert")}
    assert len(set(texts.values())) == 3
    assert "log-odds" not in texts["novice"] and "log p(A) − log p(B)" in texts["expert"]
    assert all(f"“{comparison.alternative.token}”" in text for text in texts.values())
    with pytest.raises(ValueError, match="depth must be one of"):
        comparison.text("child")


def test_why_over_rejects_what_is_not_a_decision_or_an_alternative(copier, tokenizer):
    question, _ = copy_example(random.Random(100), " Answer: ")
    report = explain(copier, tokenizer, question, max_new_tokens=8, chat=False, threshold=0.0, validate=False,
                     min_alternative_prob=0.0)  # fmt: skip
    point = report.decision_points[0]
    with pytest.raises(ValueError, match="no decision point at position 999"):
        why_over(copier, tokenizer, report, 999)
    with pytest.raises(ValueError, match="is not an alternative"):
        why_over(copier, tokenizer, report, point.position, alternative=int(point.alternatives[0].token_id) + 10**6)


def test_question_edits_are_word_level_ranges_of_the_original():
    edits = question_edits("Ann has 3 cats. Bob has 2 dogs. How many pets?", "Ann has 5 cats. How many pets?")
    assert [(e.before, e.after) for e in edits] == [("3", "5"), (" Bob has 2 dogs.", "")]
    original = "Ann has 3 cats. Bob has 2 dogs. How many pets?"
    assert all(original[e.start : e.end] == e.before for e in edits)
    assert question_edits("same", "same") == []


def test_what_if_diffs_steps_answer_and_the_dependency_the_edit_hit(shipped):
    report = explain(shipped.model, shipped.tokenizer, EQUATION, calibration=shipped.calibration)
    edited = EQUATION.replace("+ 2", "+ 5")
    diff = what_if(shipped.model, shipped.tokenizer, report, edited)
    assert [(e.before, e.after) for e in diff.edits] == [("2", "5")]
    assert diff.report.question == edited and diff.answer_after == diff.report.answer
    assert diff.answer_changed == (diff.answer_before != diff.answer_after)
    new_steps = [s.text.strip() for s in diff.report.steps]
    assert [s.after for s in diff.steps if s.change != "removed"] == new_steps
    for change in diff.steps:
        assert (change.change == "same") == (change.before == change.after)
    hit = [h for h in diff.hits if h.span.text == "2"]
    assert hit, "the edited number is a span the steps were ranked on"
    for h in hit:
        ranked = [d.span for d in report.steps[h.step].dependencies]
        assert ranked[h.rank - 1] == h.span
    kept = {(d.step, d.token) for d in diff.decision_points if d.change in ("kept", "vanished")}
    assert kept == {(d.step, d.token) for d in report.decision_points}
    assert "You changed “2” to “5”." in diff.text("novice")


def test_a_padded_chain_has_a_simpler_way_and_it_is_verified(shipped):
    # the threshold the candidates are held to is the report's refine_below, over causal claims as first stated; on
    # the shipped pico the two-step chain it finds holds 1 of its 3 dependency claims (eq. 7 ranks ", what is x?"
    # first for its first step, and masking that moves the step less than random spans), so the test sets 0.3 rather
    # than the default 0.8
    padded = explain(shipped.model, shipped.tokenizer, EQUATION, chain=PADDED_CHAIN, calibration=shipped.calibration,
                     refine_below=0.3)  # fmt: skip
    assert padded.answer == "4"
    result = simpler_way(shipped.model, shipped.tokenizer, padded, n=4, temperature=0.8, seed=3)
    assert result.simpler is not None, result.text("expert")
    assert result.simpler.answer == "4" and result.simpler.tokens < result.original_tokens
    assert result.simpler.validation_score >= padded.options.refine_below
    assert result.report is not None and result.report.chain.strip() == result.simpler.chain.strip()
    assert result.report.validation is not None
    assert "instead of" in result.text("novice") and "tokens" in result.text("intermediate")


def test_simpler_way_is_seeded_and_its_verdicts_hold(shipped):
    question = "Mia has 12 pens. She buys 7 more and gives away 5. How many pens does she have?"
    report = explain(shipped.model, shipped.tokenizer, question, validate=False)
    assert report.answer is not None, "the shipped model answers this question"
    first = simpler_way(shipped.model, shipped.tokenizer, report, n=6, temperature=1.5, seed=11, max_checks=1)
    again = simpler_way(shipped.model, shipped.tokenizer, report, n=6, temperature=1.5, seed=11, max_checks=1)
    assert [c.chain for c in first.candidates] == [c.chain for c in again.candidates]
    assert len(first.candidates) == 6
    for c in first.candidates:
        if c.verdict == "different_answer":
            assert c.answer != report.answer
        if c.verdict == "longer":
            assert c.tokens >= first.original_tokens
        if c.verdict in ("simpler", "failed_validation"):
            assert c.tokens < first.original_tokens and c.validation_score is not None
    for bad in ({"n": 0}, {"n": 17}, {"temperature": 0.0}):
        with pytest.raises(ValueError):
            simpler_way(shipped.model, shipped.tokenizer, report, **bad)
