"""ExplainOptions (typed, recorded in the report) and the registries that its string options name."""

import pytest
import torch

from sagenano.inverse import ExplainOptions, Report
from sagenano.inverse.confidence import Calibration
from sagenano.inverse.decisions import DECISION_SCORES, TokenUncertainty, decision_scores
from sagenano.inverse.significance import ATTENTION_AGGREGATES, SPAN_AGGREGATES, significance, span_score


def test_bad_options_are_refused_with_the_option_named():
    with pytest.raises(ValueError, match="threshold"):
        ExplainOptions.of(threshold=1.5)
    with pytest.raises(ValueError, match=r"options are \[.*'max_new_tokens'"):
        ExplainOptions.of(thresold=0.2)
    with pytest.raises(ValueError, match=r"unknown decision score 'loudness'; choose one of .*'entropy'"):
        ExplainOptions.of(decision_score="loudness")
    with pytest.raises(ValueError, match=r"unknown attention aggregate .*'rollout'"):
        ExplainOptions.of(attention_aggregate="median")
    with pytest.raises(ValueError, match=r"unknown span aggregate .*'mean'"):
        ExplainOptions.of(span_aggregate="median")
    with pytest.raises(ValueError, match="rollout_memory_mb"):
        ExplainOptions.of(rollout_memory_mb=0)
    assert ExplainOptions.of(attention_aggregate="group:memory").attention_aggregate == "group:memory"


def test_options_round_trip_through_a_report_typed():
    calibration = Calibration(2.0, (0.1, 0.9), (0.2, 0.8))
    options = ExplainOptions.of(threshold=0.1, calibration=calibration, chain="3x = 12")
    report = Report(
        model="m",
        question="q",
        prompt="p",
        prompt_ids=[1],
        chain="c",
        finish_reason="eos",
        answer=None,
        answer_confidence=None,
        tokens=[],
        steps=[],
        decision_points=[],
        claims=[],
        options=options,
    )
    back = Report.from_json(report.to_json())
    assert isinstance(back.options, ExplainOptions)
    assert back.options == options
    assert back.options.calibration == calibration
    assert Report.json_schema()["properties"]["options"]["$ref"].endswith("ExplainOptions")


def test_decision_score_registry_is_the_one_rule():
    # Two tokens: a 50/50 choice between two tokens, and a near-certain one.
    top = torch.tensor([[0.5, 0.5, 0.0], [0.9, 0.05, 0.05]])
    u = TokenUncertainty(
        entropies=torch.tensor([0.08, 0.04]), top_probs=top, chosen_probs=top[:, 0], meta=torch.tensor([0.6, 0.0])
    )
    assert torch.allclose(decision_scores("margin", u), torch.tensor([1.0, 0.15]))
    assert torch.allclose(decision_scores("alternatives", u), torch.tensor([0.5, 0.1]))
    assert torch.equal(decision_scores("entropy", u), u.entropies)
    assert torch.equal(decision_scores("meta", u), u.meta)
    assert torch.allclose(decision_scores("combined", u), torch.tensor([1.0, 0.15]))
    u.meta = None
    with pytest.raises(ValueError, match="needs a SAGE model"):
        decision_scores("combined", u)
    with pytest.raises(ValueError, match=str(sorted(DECISION_SCORES)).replace("[", r"\[").replace("]", r"\]")):
        decision_scores("auto", u)  # "auto" is resolved before scoring


def test_a_two_way_choice_scores_the_same_on_any_vocabulary():
    for vocabulary in (8, 4096, 150_000):
        logits = torch.full((1, vocabulary), -1e4)
        logits[0, :2] = 0.0  # a 50/50 choice between two tokens
        probs = logits.softmax(-1)
        top = probs.topk(2, -1).values
        u = TokenUncertainty(entropies=torch.zeros(1), top_probs=top, chosen_probs=top[:, 0], meta=None)
        assert float(decision_scores("margin", u)) == pytest.approx(1.0)
        assert float(decision_scores("alternatives", u)) == pytest.approx(0.5)


def test_eq7_and_span_aggregates():
    attention, gradient = torch.tensor([0.5, 0.25, 0.25]), torch.tensor([2.0, 4.0, 0.0])
    assert torch.equal(significance(attention, gradient, 0.5), torch.tensor([0.5, 0.5, 0.0]))
    scores = torch.tensor([1.0, 3.0, 8.0])
    assert [span_score(scores, [0, 1], how) for how in ("mean", "max", "sum")] == [2.0, 3.0, 4.0]
    assert set(SPAN_AGGREGATES) == {"mean", "max", "sum"}
    assert set(ATTENTION_AGGREGATES) == {"mean", "last", "rollout"}
