"""The inverse-reasoning engine on real (tiny) models: SAGE and transformers' GPT-2, Llama and Qwen2."""

from __future__ import annotations

import json
import random
import sys

import jsonschema
import pytest
import torch
from transformers.cache_utils import DynamicLayer

from conftest import copy_example, make_hf_model, make_sage
from sagenano.decoding import Chain
from sagenano.inverse import Report, explain, validate_and_refine
from sagenano.inverse.alternatives import (
    _PreallocatedLayer,
    branch_rollouts,
    decode_chain,
    greedy_rows,
)
from sagenano.inverse.answers import expected_calibration_error, extract_answer, outcome
from sagenano.inverse.calibration import (
    TOKEN_TEMPERATURES,
    AnswerRecord,
    StepRecord,
    fit_calibration,
    fit_temperature,
    load_calibration,
    save_calibration,
)
from sagenano.inverse.claims import make_claims
from sagenano.inverse.confidence import Calibration
from sagenano.inverse.decisions import default_decision_score
from sagenano.inverse.measure import (
    ablate,
    masked_step_losses,
    step_gradient_norms,
    step_inputs,
    step_losses,
)
from sagenano.inverse.options import check_question
from sagenano.inverse.report import Claim
from sagenano.inverse.spans import text_units
from sagenano.inverse.validation import _greedy_agreement

QUESTION = "Tom has 3 apples and buys 4 more. How many apples?"
FAMILIES = ("sage", "gpt2", "llama", "qwen2")


def tiny(family: str, tokenizer):
    return make_sage(tokenizer) if family == "sage" else make_hf_model(family, len(tokenizer))


@pytest.fixture(scope="module", params=FAMILIES)
def explained(request, tokenizer):
    model = tiny(request.param, tokenizer)
    # A random model spreads its probability over the whole vocabulary: no alternative reaches the default floor.
    report = explain(model, tokenizer, QUESTION, max_new_tokens=16, chat=False, max_decision_points=3, alternatives=3,
                     min_alternative_prob=0.0)  # fmt: skip
    return request.param, model, report


# --- the report ---------------------------------------------------------------------------------------


def test_report_validates_against_its_json_schema_and_round_trips(explained):
    _, _, report = explained
    document = json.loads(report.to_json())
    jsonschema.validate(document, Report.json_schema())
    assert Report.from_json(report.to_json()) == report
    assert report.steps and report.tokens and report.claims and report.validation is not None
    assert set(report.timings) >= {"generation", "scoring", "dependencies", "validation"}


def test_a_report_of_another_version_or_shape_is_refused(explained):
    _, _, report = explained
    document = json.loads(report.to_json())
    with pytest.raises(ValueError, match="schema version"):
        Report.from_json(json.dumps({**document, "schema_version": 99}))
    with pytest.raises(ValueError):
        Report.from_json(json.dumps({**document, "steps": "not a list"}))


def test_every_claim_was_checked_and_the_score_counts_them(explained):
    _, _, report = explained
    assert all(c.status == "verified" and c.check for c in report.claims), "refuted claims leave the explanation"
    validation = report.validation
    first = [*(c for c in report.claims if c.replaces is None), *validation.removed_claims]  # as first stated
    causal = [c for c in first if c.category == "causal"]
    assert validation.total == len(causal) and validation.verified == sum(c.status == "verified" for c in causal)
    checked = [*report.claims, *validation.removed_claims]
    assert validation.consistency_total == sum(c.category == "consistency" for c in checked)
    assert all(c.status == "refuted" for c in validation.removed_claims)
    assert {c.kind for c in causal} <= {"decision", "alternative", "dependency"}
    assert all(c.category == "consistency" for c in report.claims if c.kind == "confidence")


# --- decision points and alternatives ---------------------------------------------------------------------


def test_random_models_are_uncertain_so_decision_points_are_found(explained):
    _, _, report = explained
    assert report.hesitations or report.decision_points
    assert len(report.decision_points) <= 3
    for point in [*report.decision_points, *report.hesitations]:
        assert point.score >= report.options.threshold
        assert report.tokens[point.position].token == point.token
        chosen = report.tokens[point.position].id
        assert 1 <= len(point.alternatives) <= 3 and all(a.token_id != chosen for a in point.alternatives)
        assert all(a.prob >= 0 and a.calibrated_prob is None for a in point.alternatives)  # no calibration given
    for point in report.decision_points:  # shown: going another way changes where the chain ends
        assert point.changes_answer and any(a.answer != report.answer for a in point.alternatives)
    for point in report.hesitations:
        assert point.changes_answer is False and all(a.answer == report.answer for a in point.alternatives)
    candidates = [*report.decision_points, *report.hesitations]
    assert report.top_decision_score == pytest.approx(max(p.score for p in candidates))


def test_above_the_closest_call_there_are_no_decision_points_and_the_text_says_how_close(explained, tokenizer):
    _, model, report = explained
    above = min(1.0, report.top_decision_score + 0.01)
    again = explain(model, tokenizer, QUESTION, max_new_tokens=16, chat=False, threshold=above, rollouts=False,
                    validate=False)  # fmt: skip
    assert again.decision_points == [] and again.top_decision_score == pytest.approx(report.top_decision_score)
    assert f"the closest call scored {report.top_decision_score:.2f}" in again.text("intermediate")


def test_alternative_outcomes_equal_a_separate_forced_greedy_generation(explained, tokenizer):
    _, model, report = explained
    chain_ids = [t.id for t in report.tokens]
    eos = {model.generation_config.eos_token_id}
    for point in [*report.decision_points, *report.hesitations]:
        for alternative in point.alternatives:
            forced = report.prompt_ids + chain_ids[: point.position] + [alternative.token_id]
            budget = report.options.max_new_tokens - point.position - 1
            ids = torch.tensor([forced])
            if budget > 0:
                ids = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=budget, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            new = ids[0, len(report.prompt_ids) :].tolist()
            if any(t in eos for t in new[point.position + 1 :]):
                first = next(i for i in range(point.position + 1, len(new)) if new[i] in eos)
                new = new[: first + 1]
            text = decode_chain(tokenizer, new, eos)
            assert alternative.chain == text
            assert alternative.answer == extract_answer(text)
            assert alternative.outcome == outcome(extract_answer(text), report.answer)
    claims = [c for c in [*report.claims, *report.validation.removed_claims] if c.kind == "alternative"]
    shown = {c.stated["position"] for c in [*report.claims, *report.validation.removed_claims] if c.kind == "decision"}
    assert {c.stated["position"] for c in claims} <= shown  # claims are made about shown decision points only
    assert all(c.evidence["greedy"] and c.evidence["ended"] for c in claims), "the greedy replay agrees"
    assert all(len(c.evidence["sampled_answers"]) == report.options.samples for c in claims)


# --- dependencies ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def copier(answer_copier):
    """A tiny Llama trained (in seconds) to answer with the one number of the question."""
    return answer_copier


def test_the_number_the_answer_copies_ranks_first_and_its_ablation_is_verified(copier, tokenizer):
    for seed in range(100, 104):
        question, expected = copy_example(random.Random(seed), " Answer: ")
        report = explain(copier, tokenizer, question, max_new_tokens=8, chat=False)
        assert report.answer == expected.split()[-1], "the copy model must have learnt its task"
        answer_step = next(s for s in report.steps if s.is_answer)
        top = answer_step.dependencies[0].span
        assert (top.source, top.kind, top.text) == ("question", "number", report.answer)
        claim = report.claim(f"dependency-{answer_step.index}-at-{top.positions[0]}")
        assert claim.status == "verified"
        assert claim.evidence["effect"] > claim.evidence["random_median"]


def test_question_units_partition_numbers_and_clauses():
    text = "Henry has 2 boxes with 21 rocks. Priya is tall."
    units = [(text[a:b], kind) for a, b, kind in text_units(text)]
    assert units == [("Henry has", "text"), ("2", "number"), ("boxes with", "text"), ("21", "number"),
                     ("rocks.", "text"), ("Priya is tall.", "text")]  # fmt: skip


def test_a_number_is_one_unit_with_its_decimals_separators_dollar_and_percent():
    """A decimal point is neither a split inside a number nor a sentence end (issue 29, point 15: "3.75" was cut into
    '3' and '75'); a comma joins thousands only in groups of three."""
    text = "It costs 3.75 dollars. Tom pays $0.5 for 1,200 pens, saving 12.5%. Pick 1,2 or .5 of them."
    units = [(text[a:b], kind) for a, b, kind in text_units(text)]
    assert units == [("It costs", "text"), ("3.75", "number"), ("dollars.", "text"), ("Tom pays", "text"),
                     ("$0.5", "number"), ("for", "text"), ("1,200", "number"), ("pens, saving", "text"),
                     ("12.5%", "number"), ("Pick", "text"), ("1", "number"), ("2", "number"), ("or", "text"),
                     (".5", "number"), ("of them.", "text")]  # fmt: skip


def test_the_question_spans_a_step_rests_on_hold_whole_numbers(tokenizer):
    question = "It costs 3.75 dollars. Tom pays $0.5 for 1,200 pens. How much?"
    report = explain(make_sage(tokenizer), tokenizer, question, max_new_tokens=4, chat=False, rollouts=False,
                     validate=False)  # fmt: skip
    numbers = {
        d.span.text for d in report.steps[0].dependencies if d.span.source == "question" and d.span.kind == "number"
    }
    assert numbers == {"3.75", "$0.5", "1,200"}


def test_attention_aggregates_and_options_are_recorded(tokenizer):
    model = make_sage(tokenizer)
    for aggregate in ("last", "rollout", "group:memory"):
        report = explain(model, tokenizer, QUESTION, max_new_tokens=6, chat=False, attention_aggregate=aggregate,
                         rollouts=False, validate=False)  # fmt: skip
        assert report.options.attention_aggregate == aggregate
        assert all(d.attention >= 0 and d.gradient >= 0 for s in report.steps for d in s.dependencies)
    with pytest.raises(ValueError, match="unknown head group"):
        explain(model, tokenizer, QUESTION, max_new_tokens=4, attention_aggregate="group:nope", validate=False)
    with pytest.raises(ValueError, match="options are"):
        explain(model, tokenizer, QUESTION, no_such_option=1)
    with pytest.raises(ValueError, match="Calibration"):  # a bare temperature is not a calibration
        explain(model, tokenizer, QUESTION, calibration=2.0)


@pytest.mark.parametrize("family", ["sage", "llama"])
@pytest.mark.parametrize("layer", [0, 1])
def test_batched_step_gradients_equal_one_backward_pass_per_step(family, layer, tokenizer):
    model = tiny(family, tokenizer)
    ids = tokenizer("Tom has 3 apples and buys 4 more. 3 + 4 = 7", add_special_tokens=False).input_ids
    chain = Chain(torch.tensor(ids[:8]), torch.tensor(ids[8:]))
    steps = [range(0, 3), range(3, 5), range(5, len(ids) - 8)]
    expected = torch.zeros(len(steps), len(chain.inputs))
    for row, step in enumerate(steps):  # the definition: a separate backward pass for each step's NLL
        embeddings = model.get_input_embeddings()(chain.inputs[None]).detach().requires_grad_(True)
        out = model(inputs_embeds=embeddings, output_hidden_states=True)
        logp = out.logits[0].log_softmax(-1)
        nll = -sum(logp[chain.prompt_len - 1 + t, chain.token_ids[t]] for t in step)
        (grad,) = torch.autograd.grad(nll, out.hidden_states[layer])
        expected[row] = grad[0].norm(dim=-1)
    for memory_mb in (256.0, 1e-6):  # all rows in one pass, and one row per pass
        measured = step_gradient_norms(model, chain, steps, layer, memory_mb=memory_mb)
        torch.testing.assert_close(measured, expected, atol=1e-5, rtol=1e-4)
    assert (measured[0, chain.prompt_len - 1 + 3 :] == 0).all(), "positions after a step carry no gradient"


# --- validation and refinement ---------------------------------------------------------------------------------


def test_false_claims_are_refuted_and_removed_by_refinement(tokenizer):
    model = make_hf_model("gpt2", len(tokenizer))
    report = explain(model, tokenizer, QUESTION, max_new_tokens=10, chat=False, validate=False, max_decision_points=1,
                     alternatives=2, min_alternative_prob=0.0)  # fmt: skip
    true_claims = [c for c in report.claims if c.kind == "confidence"][:2]
    assert true_claims
    point = (report.decision_points or report.hesitations)[0]
    wrong_outcome = "no_answer" if point.alternatives[0].outcome != "no_answer" else "same_answer"
    false_claims = [
        Claim(id="false-confidence", kind="confidence", step=0, statement="made up",
              stated={"prob": 1.0 - report.steps[0].confidence, "tokens": [report.steps[0].token_start,
                                                                           report.steps[0].token_end]}),
        Claim(id="false-alternative", kind="alternative", step=point.step, statement="made up",
              stated={"position": point.position, "token_id": point.alternatives[0].token_id,
                      "answer": "never", "outcome": wrong_outcome}),
    ] * 2  # fmt: skip
    false_claims = [c.model_copy(update={"id": f"{c.id}-{i}"}) for i, c in enumerate(false_claims)]
    report.claims = true_claims + false_claims
    validation = validate_and_refine(report, model, tokenizer)
    assert validation.score == 0.0  # the false alternatives are the only causal claims; refinement keeps the score
    assert {c.id for c in validation.removed_claims} == {c.id for c in false_claims}
    assert all(c.status == "refuted" for c in validation.removed_claims)
    assert [c.id for c in report.claims] == [c.id for c in true_claims]
    # The false confidences stay counted among the consistency checks: as checks that disagreed.
    assert (validation.total, validation.consistency_total, validation.consistency_passed) == (
        2,
        len(true_claims) + 2,
        len(true_claims),
    )
    assert report.validation is validation


def test_a_model_that_hesitates_between_two_answers_shows_the_decision_and_a_sure_one_none(
    copier, hesitant_copier, tokenizer
):
    hesitant = hesitant_copier
    calibration = Calibration(1.0, token_temperature=1.2)  # tokens read at a calibrated temperature
    question, _ = copy_example(random.Random(101), " Answer: ")
    options = dict(max_new_tokens=8, chat=False, calibration=calibration, validate=False, reliance=False)
    unsure = explain(hesitant, tokenizer, question, **options)
    point = next(d for d in unsure.decision_points if d.step == next(s.index for s in unsure.steps if s.is_answer))
    assert point.changes_answer and 0.2 < point.calibrated_prob < 0.8
    other = next(a for a in point.alternatives if a.outcome == "different_answer")
    assert other.calibrated_prob > 0.2 and abs(int(other.answer) - int(unsure.answer)) == 1
    assert unsure.token_temperature == 1.2 and all(t.calibrated_prob is not None for t in unsure.tokens)
    sure = explain(copier, tokenizer, question, **options)
    assert sure.decision_points == []


def test_refinement_replaces_a_refuted_dependency_with_the_next_span_that_holds(copier, tokenizer):
    question, _ = copy_example(random.Random(100), " Answer: ")
    report = explain(copier, tokenizer, question, max_new_tokens=8, chat=False, validate=False, rollouts=False)
    step = next(s for s in report.steps if s.is_answer)
    number = step.dependencies[0]
    assert number.span.kind == "number"
    # The least significant span is put first, by construction: the claim made about it is false.
    step.dependencies = [step.dependencies[-1], *step.dependencies[:-1]]
    report.claims = make_claims(report, report.options)
    false_id = f"dependency-{step.index}-at-{step.dependencies[0].span.positions[0]}"
    validation = validate_and_refine(report, copier, tokenizer)
    assert [c.id for c in validation.removed_claims if c.kind == "dependency"] == [false_id]
    repaired = next(c for c in report.claims if c.replaces == false_id)
    assert repaired.status == "verified" and repaired.stated["positions"] == number.span.positions
    assert step.dependencies[0].status == "refuted" and step.dependencies[1].status == "verified"
    assert validation.repaired == 1 and validation.verified < validation.total  # the score counts the false claim


def test_a_sage_model_gets_meta_head_scores(tokenizer):
    report = explain(make_sage(tokenizer), tokenizer, QUESTION, max_new_tokens=8, validate=False, rollouts=False)
    assert report.options.decision_score == default_decision_score(make_sage(tokenizer))
    assert all(s.meta_confidence is not None and 0 <= s.meta_confidence <= 1 for s in report.steps)


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "message"),
    [
        ("", "no visible text"),
        ("   ", "no visible text"),
        ("\u200b", "no visible text"),
        ("x" * 5000, "limit"),
        ("caf\udce9", "UTF-8"),
        (b"bytes", "text"),
    ],
)
def test_bad_questions_are_refused_clearly(question, message):
    with pytest.raises(ValueError, match=message):
        check_question(question)


def test_a_question_longer_than_the_context_is_refused(tokenizer):
    with pytest.raises(ValueError, match="context"):
        explain(make_sage(tokenizer), tokenizer, "1 " * 300, max_new_tokens=4)


# --- answers and calibration -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chain", "answer"),
    [("3 + 4 = 7<|answer|>7<|endoftext|>", "7"), ("so the answer is 42.", "42"), ("x = \\boxed{5}", "5"),
     ("#### 1,200", "1,200"), ("it costs 3 then 8 dollars", "8"), ("no idea", None)],
)  # fmt: skip
def test_answer_extraction(chain, answer):
    assert extract_answer(chain) == answer


def test_temperature_fit_softens_an_overconfident_model(tmp_path):
    torch.manual_seed(0)
    records = []
    for i in range(200):  # always ~99% confident, right half of the time
        logits = torch.zeros(1, 10)
        logits[0, 3] = 8.0
        records.append(AnswerRecord(logits, torch.tensor([3]), correct=i % 2 == 0))
    temperature = fit_temperature(records)
    assert temperature > 2 and records[0].prob(temperature) == pytest.approx(0.5, abs=0.05)
    save_calibration(tmp_path, {"temperature": temperature}, "test")  # a file from before the isotonic curve
    stored = load_calibration(tmp_path)
    assert stored.temperature == pytest.approx(temperature) and stored.method == "temperature"
    (tmp_path / "calibration.json").write_text("{}")
    with pytest.raises(ValueError, match="malformed"):
        load_calibration(tmp_path)


def test_steps_tokens_and_questions_are_calibrated_too(tmp_path):
    answers, steps = [], []
    for i in range(200):  # answers and steps ~99 % sure and right half of the time (steps: a third)
        logits = torch.zeros(2, 10)
        logits[:, 3] = 8.0
        answers.append(AnswerRecord(logits[:1], torch.tensor([3]), correct=i % 2 == 0))
        steps.append(StepRecord(logits, torch.tensor([3, 3]), correct=i % 3 == 0))
    reference_nll = (TOKEN_TEMPERATURES - 1.5).abs()  # a curve whose minimum is at the grid point nearest 1.5
    calibration = fit_calibration(answers, True, steps, [1.0, 2.0, 3.0], {5, 7}, reference_nll)
    assert calibration.step_temperature > 2 and calibration.step_curve_x
    assert calibration.recalibrate_step(steps[0].prob(calibration.step_temperature)) == pytest.approx(1 / 3, abs=0.02)
    assert calibration.token_temperature == pytest.approx(1.5, rel=0.1)
    assert 2.9 < calibration.question_nll_bound <= 3.0 and calibration.question_token_ids == (5, 7)
    save_calibration(tmp_path, calibration.to_dict(), "test")
    assert load_calibration(tmp_path) == calibration


def _mixture_records() -> list[AnswerRecord]:
    """Two tasks the temperature cannot tell apart: both answer with the same ~99.97 % probability, one is right
    90 % of the time, the other 10 %; a third group answers at ~73 % and is right 30 % of the time."""
    records = []
    for i in range(300):
        logits = torch.zeros(1, 10)
        logits[0, 3] = 10.0 if i < 200 else 3.2
        correct = (i % 10 != 0) if i < 100 else (i % 10 == 0) if i < 200 else (i % 10 < 3)
        records.append(AnswerRecord(logits, torch.tensor([3]), correct=correct))
    return records


def test_the_isotonic_curve_calibrates_what_one_temperature_cannot(tmp_path):
    records = _mixture_records()
    correct = [r.correct for r in records]
    temperature_only = fit_calibration(records, isotonic=False)
    both = fit_calibration(records)
    ece_t = expected_calibration_error([temperature_only.confidence(r.logits, r.ids) for r in records], correct, 15)
    ece_both = expected_calibration_error([both.confidence(r.logits, r.ids) for r in records], correct, 15)
    assert ece_both < 0.02 < ece_t  # the confident half is right half the time; only the curve says 50 %
    assert both.confidence(records[0].logits, records[0].ids) == pytest.approx(0.5, abs=0.01)
    assert both.confidence(records[250].logits, records[250].ids) == pytest.approx(0.3, abs=0.01)
    save_calibration(tmp_path, both.to_dict(), "test")
    assert load_calibration(tmp_path) == both  # the curve travels through calibration.json


def test_a_calibration_curve_must_be_monotone_and_inside_the_unit_interval(tmp_path):
    assert Calibration(2.0, (0.1, 0.9), (0.2, 0.8)).recalibrate(0.5) == pytest.approx(0.5)
    assert Calibration(2.0, (0.1, 0.9), (0.2, 0.8)).recalibrate(0.99) == pytest.approx(0.8)  # flat beyond
    for bad in ({"temperature": 0.0}, {"temperature": 1.0, "curve_x": [0.9, 0.1], "curve_y": [0.1, 0.2]},
                {"temperature": 1.0, "curve_x": [0.1, 0.9], "curve_y": [0.2, 1.5]},
                {"temperature": 1.0, "curve_x": [0.1], "curve_y": []}):  # fmt: skip
        save_calibration(tmp_path, bad, "test")
        with pytest.raises(ValueError, match="malformed"):
            load_calibration(tmp_path)


def test_a_given_chain_is_explained_with_the_models_own_numbers(tokenizer):
    model = make_sage(tokenizer)
    chain = "3 + 4 = 7<|answer|>7<|endoftext|>"
    report = explain(model, tokenizer, QUESTION, chain=chain, rollouts=False)
    assert report.chain == "3 + 4 = 7<|answer|>7" and report.answer == "7" and report.finish_reason == "eos"
    assert [s.text for s in report.steps] == ["3 + 4 = 7", "7"] and report.steps[1].is_answer
    generated = explain(model, tokenizer, QUESTION, max_new_tokens=8, validate=False, rollouts=False)
    forced_first = explain(model, tokenizer, QUESTION, chain=generated.chain, validate=False, rollouts=False)
    assert [t.prob for t in forced_first.tokens] == pytest.approx([t.prob for t in generated.tokens], abs=1e-5)
    with pytest.raises(ValueError, match="empty"):
        explain(model, tokenizer, QUESTION, chain="")


@pytest.mark.parametrize("family", ["sage", "llama"])
def test_branch_rollouts_from_the_shared_cache_equal_fresh_generation(family, tokenizer):
    """Branches generated from the chain's cache (preallocated, written in place) equal branches generated from
    scratch, for branch points early, late and equal."""
    model = tiny(family, tokenizer)
    sequence = torch.tensor(tokenizer(QUESTION + " 3 + 4 = 7 apples.").input_ids)
    branches = [(3, 17), (len(sequence) - 2, 40), (len(sequence) - 2, 41), (8, 17)]
    end = len(sequence) + 12
    assert branch_rollouts(model, sequence, branches, end) == branch_rollouts(
        model, sequence, branches, end, reuse_cache=False
    )


@pytest.mark.parametrize("family", ["sage", "llama"])
def test_rows_that_end_leave_the_batch_and_the_rest_still_decode_greedily(family, tokenizer):
    """Left-padded rows ending at different lengths: each row's tokens equal its own greedy generation, cut at its
    first stop token, whether or not ended rows have been dropped from the batch around it."""
    model = tiny(family, tokenizer)
    prompts = [tokenizer(text).input_ids for text in ("Tom has 3 apples.", "x = 4", "If 3x + 2 = 14, what is x?")]
    budget = 14
    alone = []
    for ids in prompts:
        ids = torch.tensor([ids])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=budget, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        alone.append(out[0, ids.shape[1] :].tolist())
    stop = {alone[0][2], alone[1][6]}  # row 0 ends early, row 1 later (sooner if a token recurs); row 2 has neither
    longest = max(map(len, prompts))
    rows = torch.full((len(prompts), longest), tokenizer.pad_token_id)
    mask = torch.zeros_like(rows)
    for r, ids in enumerate(prompts):
        rows[r, longest - len(ids) :], mask[r, longest - len(ids) :] = torch.tensor(ids), 1
    generated = greedy_rows(model, rows, mask, None, [budget] * len(prompts), stop)
    for new, reference in zip(generated, alone, strict=True):
        ends = [i for i, token in enumerate(reference) if token in stop]
        assert new == (reference[: ends[0] + 1] if ends else reference)
    assert len(generated[0]) < budget and len(generated[2]) == budget, "rows ended early, row 2 ran on without them"


@pytest.mark.parametrize("family", ["sage", "llama"])
def test_branches_that_end_early_leave_the_shared_cache_batch_and_the_rest_match_generate(family, tokenizer):
    """End to end through the preallocated cache: stop tokens taken from the branches' own continuations make rows
    end at different steps (and leave the batch); every branch still equals its own greedy generation."""
    model = tiny(family, tokenizer)
    sequence = torch.tensor(tokenizer(QUESTION + " 3 + 4 = 7 apples.").input_ids)
    branches = [(3, 17), (len(sequence) - 2, 40), (len(sequence) - 2, 41), (8, 17), (6, 90)]
    end = len(sequence) + 12
    free = branch_rollouts(model, sequence, branches, end)
    stops = [free[0][2], free[3][5]]
    model.generation_config.eos_token_id = stops
    ended = branch_rollouts(model, sequence, branches, end)
    for (k, token), got in zip(branches, ended, strict=True):
        ids = torch.cat([sequence[:k], torch.tensor([token])])[None]
        alone = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=end - k - 1, do_sample=False,
                               eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)[0, k:].tolist()  # fmt: skip
        cut = next((i for i in range(1, len(alone)) if alone[i] in stops), None)
        assert got == (alone if cut is None else alone[: cut + 1])
    assert len(ended[0]) <= 3 and max(map(len, ended)) > 6, "one row ended early while others ran on"


def test_preallocated_cache_layer_keeps_selected_rows_in_place():
    keys, values = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 4, 5)
    layer = _PreallocatedLayer(keys, values, capacity=8)
    layer.batch_select_indices(torch.tensor([0, 2]))
    new_keys, new_values = torch.randn(2, 2, 1, 5), torch.randn(2, 2, 1, 5)
    got_keys, got_values = layer.update(new_keys, new_values)
    assert torch.equal(got_keys, torch.cat([keys[[0, 2]], new_keys], 2))
    assert torch.equal(got_values, torch.cat([values[[0, 2]], new_values], 2))
    assert layer.keys.data_ptr() == layer.key_buffer.data_ptr() and layer.key_buffer.shape[-2] == 8


def test_preallocated_cache_layer_writes_in_place_then_concatenates_past_its_room():
    keys, values = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    layer, reference = _PreallocatedLayer(keys, values, capacity=6), DynamicLayer()
    reference.update(keys, values)
    for step in range(4):  # two steps fit the room, two do not
        new_keys, new_values = torch.randn(2, 3, 1, 5), torch.randn(2, 3, 1, 5)
        got, expected = layer.update(new_keys, new_values), reference.update(new_keys, new_values)
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
        in_place = layer.key_buffer is not None and layer.keys.data_ptr() == layer.key_buffer.data_ptr()
        assert in_place == (step < 2)
    assert layer.get_seq_length() == 8


@pytest.mark.parametrize("family", ["sage", "llama", "mistral"])
def test_greedy_agreement_accepts_greedy_continuations_and_rejects_another_token(family, tokenizer, monkeypatch):
    """On the chain's branches the check feeds each row only from its branch point on (the prefix's keys and values
    come from one pass of its own); a sequence off the chain, and every sequence on Mistral (sliding windows), is
    scored whole."""
    model = tiny(family, tokenizer)
    prompt = torch.tensor(tokenizer(QUESTION).input_ids)
    greedy = model.generate(prompt[None], attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                            max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.pad_token_id)[0]  # fmt: skip
    with torch.no_grad():
        logits = model(greedy[None]).logits[0]
    second = greedy.clone()
    last = len(greedy) - 1
    second[last] = logits[last - 1].topk(2).indices[1]  # the runner-up at the last position
    start = torch.tensor(tokenizer("x = 4").input_ids)  # a prefix that is not the chain's: scored whole
    other = model.generate(start[None], attention_mask=torch.ones(1, len(start), dtype=torch.long), max_new_tokens=5,
                           do_sample=False, pad_token_id=tokenizer.pad_token_id)[0]  # fmt: skip
    forced = [len(prompt), len(prompt) + 3, len(prompt) + 3, last, len(start)]  # earliest, later, at the change
    sequences = [greedy, greedy[:-2], second, second, other]
    fed = {"after branch": [], "whole": []}
    validate_module = sys.modules[_greedy_agreement.__module__]  # the package exports a function of the same name
    for name, attribute in (("after branch", "_most_likely_after_branch"), ("whole", "_most_likely_from")):
        scored = getattr(validate_module, attribute)
        spy = lambda *args, scored=scored, name=name: fed[name].append(len(args[1])) or scored(*args)  # noqa: E731
        monkeypatch.setattr(validate_module, attribute, spy)
    assert _greedy_agreement(model, sequences[:4], forced[:4]) == [True, True, False, True]
    assert fed == ({"after branch": [], "whole": [4]} if family == "mistral" else {"after branch": [4], "whole": []})
    assert _greedy_agreement(model, sequences, forced) == [True, True, False, True, True]
    other[-1] = (other[-1] + 1) % len(tokenizer)  # not the greedy token (the tiny models' ties are rare)
    assert _greedy_agreement(model, sequences, forced)[-1] is False
    fed = {"after branch": [], "whole": []}
    assert _greedy_agreement(model, sequences[:4], forced[:4], memory_mb=1e-6) == [True, True, False, True]
    assert fed["after branch"] + fed["whole"] == [1, 1, 1, 1], "one row per pass where memory holds one copy"


@pytest.mark.parametrize("family", ["sage", "llama"])
def test_one_masked_row_gives_every_steps_loss_as_a_row_per_step_does(family, tokenizer):
    model = tiny(family, tokenizer)
    ids = torch.tensor(tokenizer(QUESTION + " 3 + 4 = 7. So he has 7 apples. The answer is 7.").input_ids)
    chain = Chain(ids[:14], ids[14:])
    steps = [range(0, 4), range(4, 11), range(11, len(ids) - 14)]
    requests = [([2, 3], steps), ([5], steps[1:]), ([0, 1, 2], steps[:1]), ([], steps), ([15, 16], steps[2:])]
    got = masked_step_losses(model, chain, requests, tokenizer.pad_token_id)
    one_by_one = masked_step_losses(model, chain, requests, tokenizer.pad_token_id, logits_mb=1e-6)  # a row a pass
    assert [x for row in one_by_one for x in row] == pytest.approx([x for row in got for x in row], abs=1e-5)
    for (masked, asked), losses in zip(requests, got, strict=True):
        expected = [
            float(
                step_losses(model, ablate(step_inputs(chain, step), [masked], tokenizer.pad_token_id), chain, step)[0]
            )
            for step in asked
        ]
        assert losses == pytest.approx(expected, abs=1e-4)
