"""Figure 2's attribution baselines (attention, Captum's gradient, IG, LIME, SHAP) on the engine's spans."""

from __future__ import annotations

import math
import random

import pytest
import torch

from conftest import copy_example, make_hf_model, make_sage, train_copier
from sagenano.eval.baselines import (
    BASELINES,
    baseline_span_scores,
    integrated_gradient_token_scores,
    rank_agreement,
    step_logprob_function,
    step_target,
)
from sagenano.eval.rank_correlation import average_ranks, spearman
from sagenano.inverse import explain

pytest.importorskip("captum")

QUESTION = "Tom has 3 apples and buys 4 more. How many apples?"
CHAIN = " So 3 and 4 make 7.<|answer|>7<|endoftext|>"  # the answer step can rest on the first step's spans


@pytest.fixture(scope="module")
def copier(tokenizer):
    """A tiny Llama trained (in seconds) to answer with the one number of the question, as its own step."""
    return train_copier(tokenizer, "<|answer|>", steps=100, batch_size=16)


@pytest.fixture(scope="module")
def copied(copier, tokenizer):
    """Reports of the copy model's own answers to two held-out questions."""
    reports = []
    for seed in (100, 101):
        question, expected = copy_example(random.Random(seed), "<|answer|>")
        report = explain(copier, tokenizer, question, max_new_tokens=4, chat=False, rollouts=False, validate=False)
        assert report.chain == expected, "the copy model must have learnt its task"
        reports.append(report)
    return reports


@pytest.mark.parametrize("method", BASELINES)
def test_every_baseline_ranks_the_copied_number_first(method, copier, tokenizer, copied):
    for report in copied:
        step = next(s for s in report.steps if s.is_answer)
        scores = baseline_span_scores(method, copier, tokenizer, report, step.index)
        spans = [d.span for d in step.dependencies]
        top = spans[max(range(len(scores)), key=scores.__getitem__)]
        assert (top.source, top.kind, top.text) == ("question", "number", report.answer), (method, scores)


@pytest.fixture(scope="module", params=("sage", "llama", "gpt2"))
def explained(request, tokenizer):
    family = request.param
    model = make_sage(tokenizer) if family == "sage" else make_hf_model(family, len(tokenizer))
    report = explain(model, tokenizer, QUESTION, chain=CHAIN, chat=False, rollouts=False, validate=False)
    assert [s.text.strip() for s in report.steps] == ["So 3 and 4 make 7.", "7"]
    return model, report


@pytest.mark.parametrize("method", BASELINES)
def test_every_baseline_scores_every_candidate_span_once(method, explained, tokenizer):
    model, report = explained
    attention_before = model.config._attn_implementation
    for step in report.steps:
        scores = baseline_span_scores(method, model, tokenizer, report, step.index, n_samples=16, ig_steps=4)
        assert len(scores) == len(step.dependencies) > 0
        assert all(math.isfinite(s) for s in scores)
    assert any(d.span.source == "step" for d in report.steps[1].dependencies)
    assert model.config._attn_implementation == attention_before


@pytest.mark.parametrize("method", ["lime", "shap"])
def test_sampling_baselines_are_deterministic_given_a_seed(method, explained, tokenizer):
    model, report = explained
    rng_before = torch.get_rng_state()
    first, again, other = (
        baseline_span_scores(method, model, tokenizer, report, 1, n_samples=16, seed=seed) for seed in (0, 0, 1)
    )
    assert first == again and first != other
    assert torch.equal(torch.get_rng_state(), rng_before), "the global RNG must be left as it was"


def test_a_lone_span_gets_its_exact_shapley_value(explained, tokenizer):
    model, report = explained
    report = report.model_copy(deep=True)
    report.steps[1].dependencies = report.steps[1].dependencies[:1]
    task = step_target(report, 1)
    ablated = task.context.clone()
    ablated[task.spans[0].positions] = tokenizer.pad_token_id
    step_logprob = step_logprob_function(model, task)
    with torch.no_grad():
        effect = float(step_logprob(task.context[None]) - step_logprob(ablated[None]))
    assert baseline_span_scores("shap", model, tokenizer, report, 1) == [pytest.approx(effect, abs=1e-6)]
    assert math.isfinite(baseline_span_scores("lime", model, tokenizer, report, 1, n_samples=8)[0])


def test_ablation_is_each_spans_leave_one_out_effect(explained, tokenizer):
    model, report = explained
    task = step_target(report, 1)
    step_logprob = step_logprob_function(model, task)
    expected = []
    with torch.no_grad():
        full = float(step_logprob(task.context[None]))
        for span in task.spans:
            ablated = task.context.clone()
            ablated[span.positions] = tokenizer.pad_token_id
            expected.append(full - float(step_logprob(ablated[None])))
    assert len(set(expected)) > 1, "the spans must differ in effect for the check to mean something"
    assert baseline_span_scores("ablation", model, tokenizer, report, 1) == pytest.approx(expected, abs=1e-5)


def test_integrated_gradients_add_up_to_the_log_probability_gain(tokenizer):
    model = make_sage(tokenizer)
    report = explain(model, tokenizer, QUESTION, chain=CHAIN, chat=False, rollouts=False, validate=False)
    task = step_target(report, 1)
    attribution = integrated_gradient_token_scores(model, tokenizer, task, ig_steps=32)
    step_logprob = step_logprob_function(model, task)
    padding = torch.full_like(task.context, tokenizer.pad_token_id)
    with torch.no_grad():
        gain = step_logprob(task.context[None]) - step_logprob(padding[None])
    assert float(attribution.sum()) == pytest.approx(float(gain), rel=0.05, abs=1e-3)


def test_a_wrong_method_or_step_is_refused_clearly(explained, tokenizer):
    model, report = explained
    with pytest.raises(ValueError, match=r"unknown baseline method 'saliency'.*integrated_gradients"):
        baseline_span_scores("saliency", model, tokenizer, report, 0)
    with pytest.raises(ValueError, match="step_index 5 is out of range"):
        baseline_span_scores("attention", model, tokenizer, report, 5)


def test_rank_agreement_is_spearman_with_average_ranks():
    a, b = [0.1, 0.5, 0.5, 0.9, 0.2], [1.0, 3.0, 2.0, 4.0, 0.0]
    assert list(average_ranks(a)) == [1.0, 3.5, 3.5, 5.0, 2.0]
    assert rank_agreement(a, a) == pytest.approx(1.0)
    assert rank_agreement(a, [-x for x in a]) == pytest.approx(-1.0)
    assert rank_agreement(a, b) == spearman(a, b)  # the one implementation (`sagenano.eval.rank_correlation`)
    assert math.isnan(rank_agreement([*a, math.nan], [*b, 1.0]))  # a NaN score: no ranking to compare
    assert math.isnan(rank_agreement([1.0, 1.0], [1.0, 2.0])) and math.isnan(rank_agreement([1.0], [2.0]))
    with pytest.raises(ValueError, match="same spans"):
        rank_agreement([1.0, 2.0], [1.0])
