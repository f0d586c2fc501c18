"""The out-of-distribution notice: measured on the shipped model with its stored calibration."""

from __future__ import annotations

import pytest

from sagenano.data import generate_items
from sagenano.inverse import explain
from sagenano.inverse.calibration import CALIBRATION_SEED
from sagenano.loading import load_model

QUICK = dict(rollouts=False, validate=False, own_explanation=False, reliance=False, max_new_tokens=64)


@pytest.fixture(scope="module")
def shipped():
    loaded = load_model(None)
    assert loaded.calibration is not None and loaded.calibration.question_nll_bound is not None
    return loaded


def test_a_held_out_item_is_familiar(shipped):
    item = generate_items("arithmetic", 1, CALIBRATION_SEED + 7, "heldout")[0]
    report = explain(shipped.model, shipped.tokenizer, item.question, calibration=shipped.calibration, **QUICK)
    familiarity = report.familiarity
    assert not familiarity.unusual and familiarity.reasons == []
    assert familiarity.question_nll <= familiarity.typical_nll == shipped.calibration.question_nll_bound


@pytest.mark.parametrize("question", ["🦄🌈🍕🚀🎉 ❓", "Ünïcödé ßtrâñgé wörds ñot sëen ïn träïning?"])
def test_a_question_of_untrained_tokens_is_flagged_with_its_reason(shipped, question):
    report = explain(shipped.model, shipped.tokenizer, question, calibration=shipped.calibration, **QUICK)
    familiarity = report.familiarity
    assert familiarity.unusual and any("never occur in the questions" in reason for reason in familiarity.reasons)
    # the likelihood is a second sign (a model is not trained on question tokens): said exactly when it is measured
    less_likely = familiarity.question_nll > familiarity.typical_nll
    assert less_likely == any("less likely under the model" in reason for reason in familiarity.reasons)


def test_without_a_bound_only_what_was_measured_is_said(shipped):
    item = generate_items("arithmetic", 1, CALIBRATION_SEED + 7, "heldout")[0]
    report = explain(shipped.model, shipped.tokenizer, item.question, **QUICK)  # no calibration given
    assert report.familiarity.typical_nll is None and report.familiarity.question_nll > 0
