"""ExplainOptions (typed, recorded in the report) and the registries that its string options name."""

import pytest
import torch

from sagenano.inverse import ExplainOptions, Report
from sagenano.inverse.confidence import AnswerCalibration
from sagenano.inverse.decisions import DECISION_SCORES, decision_scores
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
    calibration = AnswerCalibration(2.0, (0.1, 0.9), (0.2, 0.8))
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
    entropies, margins, meta = torch.tensor([0.2, 0.9]), torch.tensor([0.5, 0.1]), torch.tensor([0.6, 0.0])
    assert torch.equal(decision_scores("entropy", entropies, margins, None), entropies)
    assert torch.allclose(decision_scores("margin", entropies, margins, None), torch.tensor([0.5, 0.9]))
    assert torch.equal(decision_scores("meta", entropies, margins, meta), meta)
    assert torch.equal(decision_scores("combined", entropies, margins, meta), torch.tensor([0.6, 0.9]))
    with pytest.raises(ValueError, match="needs a SAGE model"):
        decision_scores("combined", entropies, margins, None)
    with pytest.raises(ValueError, match=str(sorted(DECISION_SCORES)).replace("[", r"\[").replace("]", r"\]")):
        decision_scores("auto", entropies, margins, meta)  # "auto" is resolved before scoring


def test_eq7_and_span_aggregates():
    attention, gradient = torch.tensor([0.5, 0.25, 0.25]), torch.tensor([2.0, 4.0, 0.0])
    assert torch.equal(significance(attention, gradient, 0.5), torch.tensor([0.5, 0.5, 0.0]))
    scores = torch.tensor([1.0, 3.0, 8.0])
    assert [span_score(scores, [0, 1], how) for how in ("mean", "max", "sum")] == [2.0, 3.0, 4.0]
    assert set(SPAN_AGGREGATES) == {"mean", "max", "sum"}
    assert set(ATTENTION_AGGREGATES) == {"mean", "last", "rollout"}
