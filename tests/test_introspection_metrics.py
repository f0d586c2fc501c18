"""The metric helpers of `sagenano.eval.introspection`, and smoke runs of its measurements on a tiny SAGE."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from conftest import make_sage
from sagenano.data import Dependency, Span, generate_items
from sagenano.eval import introspection as intro
from sagenano.eval.introspection import calibration as intro_calibration
from sagenano.inverse import explain
from sagenano.inverse.calibration import TOKEN_TEMPERATURES, AnswerRecord, CalibrationSet, StepRecord, fit_calibration
from sagenano.inverse.confidence import Calibration
from sagenano.inverse.report import DependencyScore, SpanRef
from sagenano.tokenizer import load_tokenizer, with_sage_prompt


def span(start: int, end: int, source: str = "question", step: int | None = None) -> SpanRef:
    return SpanRef(source=source, step=step, start=start, end=end, text="x" * (end - start), kind="text",
                   positions=list(range(start, end)))  # fmt: skip


def scored(s: SpanRef, significance: float, attention: float = 0.0, gradient: float = 0.0) -> DependencyScore:
    return DependencyScore(span=s, significance=significance, share=0.0, attention=attention, gradient=gradient)


GOLD = [Dependency("question", None, 10, 12, "12"), Dependency("step", 0, 0, 2, "70")]
DISTRACTORS = [Span(30, 32, "27")]


# --- matching spans -----------------------------------------------------------------------------------


def test_overlap_is_half_open():
    assert intro.overlaps(0, 5, 4, 8) and intro.overlaps(4, 8, 0, 5)
    assert not intro.overlaps(0, 5, 5, 8)  # touching ranges share no character
    assert intro.overlaps(2, 3, 0, 10)  # containment


def test_a_true_dependency_needs_the_same_source_step_and_overlapping_chars():
    assert intro.is_true_dependency(span(11, 14), GOLD)
    assert not intro.is_true_dependency(span(12, 14), GOLD)  # right after the gold span
    assert intro.is_true_dependency(span(1, 3, "step", 0), GOLD)
    assert not intro.is_true_dependency(span(1, 3, "step", 1), GOLD)  # another step
    assert not intro.is_true_dependency(span(0, 2), GOLD)  # question chars of the step dependency


def test_distractors_are_question_spans_over_a_distractor_that_are_not_true():
    assert intro.is_distractor(span(29, 31), GOLD, DISTRACTORS)
    assert not intro.is_distractor(span(29, 31, "step", 0), GOLD, DISTRACTORS)
    assert not intro.is_distractor(span(32, 40), GOLD, DISTRACTORS)
    assert not intro.is_distractor(span(10, 31), GOLD, DISTRACTORS)  # also covers gold: true, not a distractor


# --- rankings ----------------------------------------------------------------------------------------------


def test_rank_orders_by_the_method_and_breaks_ties_in_text_order():
    a, b, c = span(0, 2), span(5, 7), span(0, 2, "step", 0)
    deps = [scored(c, 0.5, attention=0.1, gradient=3.0), scored(b, 0.9, attention=0.1, gradient=1.0),
            scored(a, 0.1, attention=0.1, gradient=2.0)]  # fmt: skip
    assert [d.span for d in intro.rank(deps, "eq7")] == [b, c, a]
    assert [d.span for d in intro.rank(deps, "gradient_only")] == [c, a, b]
    assert [d.span for d in intro.rank(deps, "attention_only")] == [a, b, c]  # all tied: question first, then steps


def test_rank_by_scores_puts_nan_last_and_breaks_ties_in_text_order():
    a, b, c = span(0, 2), span(5, 7), span(0, 2, "step", 0)
    deps = [scored(c, 0.0), scored(b, 0.0), scored(a, 0.0)]
    assert [d.span for d in intro.rank_by_scores(deps, [1.0, math.nan, 1.0])] == [a, c, b]
    assert [d.span for d in intro.rank_by_scores(deps, [-1.0, 2.0, 0.5])] == [b, a, c]
    with pytest.raises(ValueError):
        intro.rank_by_scores(deps, [1.0])


def test_settings_reject_unknown_baselines_and_bad_counts():
    assert intro.IntrospectionSettings(baselines=("lime",)).methods == (
        "eq7",
        "attention_only",
        "gradient_only",
        "lime",
    )
    with pytest.raises(ValueError, match="unknown baselines"):
        intro.IntrospectionSettings(baselines=("lime", "occlusion"))
    with pytest.raises(ValueError, match="own_items"):
        intro.IntrospectionSettings(own_items=-1)
    with pytest.raises(ValueError, match="baseline_samples"):
        intro.IntrospectionSettings(baseline_samples=0)


def test_ranking_metrics_on_a_constructed_ranking():
    true_q, true_s, distractor, other = span(10, 12), span(0, 2, "step", 0), span(30, 32), span(40, 45)
    metrics = intro.ranking_metrics([other, true_q, distractor, true_s], GOLD, DISTRACTORS)
    assert metrics == {"top1": False, "precision": 1 / 3, "recall": 0.5, "distractor_win": False}
    metrics = intro.ranking_metrics([true_s, distractor, true_q], GOLD, DISTRACTORS)
    assert metrics == {"top1": True, "precision": 2 / 3, "recall": 1.0, "distractor_win": False}
    assert intro.ranking_metrics([true_q], GOLD, [])["distractor_win"] is None  # no distractors: not counted
    with pytest.raises(ValueError):
        intro.ranking_metrics([true_q], [], DISTRACTORS)


def test_distractor_wins_compares_the_best_ranked_of_each():
    true_q, distractor, other = span(10, 12), span(30, 32), span(40, 45)
    assert intro.distractor_wins([other, distractor, true_q], GOLD, DISTRACTORS)
    assert not intro.distractor_wins([true_q, distractor], GOLD, DISTRACTORS)
    assert intro.distractor_wins([other, distractor], GOLD, DISTRACTORS)  # no true span at all: it ranks last
    assert not intro.distractor_wins([other, true_q], GOLD, DISTRACTORS)  # no distractor span: it never wins


# --- Spearman ----------------------------------------------------------------------------------------------


def test_average_ranks_share_ties():
    assert intro.average_ranks([10, 20, 20, 30]).tolist() == [1, 2.5, 2.5, 4]
    assert intro.average_ranks([3, 1, 3, 3]).tolist() == [3, 1, 3, 3]


def test_spearman_on_known_rankings():
    assert intro.spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)  # monotone, not linear
    assert intro.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties: ranks x = [1, 2.5, 2.5, 4], y = [1, 2, 3, 4] -> Pearson of those ranks
    rx, ry = [1, 2.5, 2.5, 4], [1, 2, 3, 4]
    mx, my = sum(rx) / 4, sum(ry) / 4
    expected = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True)) / math.sqrt(
        sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)
    )
    assert intro.spearman([0.1, 0.5, 0.5, 0.9], [1, 2, 3, 4]) == pytest.approx(expected)
    assert expected == pytest.approx(0.9486833, abs=1e-6)
    assert math.isnan(intro.spearman([1, 1, 1], [1, 2, 3]))  # a constant side has no ranking
    assert math.isnan(intro.spearman([1], [2]))
    with pytest.raises(ValueError):
        intro.spearman([1, 2], [1])


# --- faithfulness helpers -----------------------------------------------------------------------------------


def test_random_positions_take_exactly_the_count_from_the_spans():
    spans = [[1, 2, 3], [7, 8], [10], [12, 13, 14, 15]]
    pool = {p for s in spans for p in s}
    for seed in range(20):
        chosen = intro.random_positions(spans, 4, random.Random(seed))
        assert len(chosen) == len(set(chosen)) == 4 and set(chosen) <= pool and chosen == sorted(chosen)
    assert intro.random_positions(spans, 4, random.Random(3)) == intro.random_positions(spans, 4, random.Random(3))
    assert intro.random_positions(spans, 99, random.Random(0)) == sorted(pool)  # never more than the pool
    assert intro.random_positions(spans, 0, random.Random(0)) == []


def test_erasure_rows_and_the_two_scores():
    removed, kept_only = intro.erasure_rows({2, 3}, {1, 2, 3, 4})
    assert removed == [2, 3] and kept_only == [1, 4]
    assert intro.comprehensiveness(nll_full=2.0, nll_removed=5.0) == 3.0
    assert intro.sufficiency(nll_full=2.0, nll_only_kept=2.5) == 0.5


def test_goals_fail_when_nothing_was_measured():
    nan = math.nan
    overall = {
        "dependency": {m: {"top1": nan, "distractor_wins": nan} for m in intro.ENGINE_RANKINGS},
        "alternatives": {"verified_share": nan},
        "alternatives_low": {"verified_share": 1.0},
        "decision": {"default_score": None, "spearman": {}, "auroc": {}, "shown_share": nan,
                     "change_nothing_share": nan},
        "claims": {"precision": nan},
        "calibration": {"answer_ece_after": nan, "step_ece_after": nan},
    }  # fmt: skip
    results = {g["goal"]: g["result"] for g in intro.goals(overall)}
    assert len(results) == 12 and results["alternatives verified (low threshold)"] == "PASS"
    assert [r for g, r in results.items() if "low threshold" not in g] == ["FAIL"] * 11


# --- decision points, claims and reliance, summarised from hand-made records ------------------------------------


def decision(steps: list[tuple[float, float, float]], shown: list[int], default: str = "margin") -> dict:
    """A decision record: per step (effect, margin, entropy) with no meta score; per shown point its other answers."""
    return {
        "skipped": None,
        "default_score": default,
        "steps": [{"step": k, "effect": e, "margin": m, "entropy": h, "position": float(k)}
                  for k, (e, m, h) in enumerate(steps)],
        "shown": [{"position": 3 * i, "other_answers": other} for i, other in enumerate(shown)],
    }  # fmt: skip


def test_auroc_ranks_the_steps_that_change_the_answer_and_is_nan_with_one_class():
    assert intro.auroc([0.1, 0.9, 0.2, 0.8], [False, True, False, True]) == 1.0
    assert intro.auroc([0.9, 0.1, 0.8, 0.2], [False, True, False, True]) == 0.0
    assert intro.auroc([0.5, 0.5, 0.5, 0.5], [False, True, False, True]) == 0.5  # ties count half
    assert intro.auroc([0.1, 0.6, 0.4], [False, True, False]) == 1.0
    assert math.isnan(intro.auroc([0.1, 0.2], [True, True])) and math.isnan(intro.auroc([], []))


def test_decision_summary_gives_each_score_its_spearman_and_auroc():
    records = [{"decision": decision([(0.0, 0.1, 0.9), (0.5, 0.9, 0.1)], [])},
               {"decision": decision([(0.1, 0.2, 0.8), (0.25, 0.8, 0.2)], [])},
               {"decision": {"skipped": "no answer", "steps": [], "shown": []}}]  # fmt: skip
    summary = intro.summarise_decision(records)
    assert summary["items"] == 3 and summary["skipped"] == 1 and summary["steps"] == 4
    assert summary["changing_steps"] == 2 and summary["default_score"] == "margin"
    assert set(summary["auroc"]) == set(summary["spearman"]) == set(intro.STEP_SCORES)
    assert summary["auroc"]["margin"] == 1.0 and summary["spearman"]["margin"] == pytest.approx(1.0)
    assert summary["auroc"]["entropy"] == 0.0 and summary["spearman"]["entropy"] == pytest.approx(-1.0)
    assert summary["auroc"]["position"] == 1.0  # the second step changes the answer in both items
    assert math.isnan(summary["auroc"]["meta"]) and math.isnan(summary["spearman"]["meta"])  # no meta head
    calm = intro.summarise_decision([{"decision": decision([(0.0, 0.1, 0.9), (0.1, 0.9, 0.1)], [])}])
    assert math.isnan(calm["auroc"]["margin"]) and calm["items_with_change"] == 0  # no step changes the answer


def test_shown_summary_counts_items_with_a_changing_step_and_points_that_change_nothing():
    records = [
        {"decision": decision([(0.0, 0.1, 0.1), (0.5, 0.9, 0.1)], [0])},  # a change found; its point changes nothing
        {"decision": decision([(0.3, 0.1, 0.1)], [])},  # a change found, nothing shown
        {"decision": decision([(0.2, 0.1, 0.1)], [3, 1])},  # effect 0.2 counts as a change; both points change it
        {"decision": decision([(0.1, 0.1, 0.1)], [2])},  # no change found, one point shown (it changes the answer)
        {"id": "not measured"},
    ]
    summary = intro.summarise_decision(records)
    assert summary["items"] == 4 and summary["items_with_change"] == 3
    assert summary["shown_share"] == pytest.approx(2 / 3) and summary["shown_without_change"] == 1.0
    assert summary["shown_points"] == 4 and summary["change_nothing_share"] == 0.25
    empty = intro.summarise_decision([{"decision": decision([(0.0, 0.1, 0.1)], [])}])
    assert math.isnan(empty["shown_share"]) and math.isnan(empty["change_nothing_share"])


def test_claim_summary_pools_verified_shares_and_judges_only_verified_claims():
    def claims(dependencies, alternatives, before, after):
        return {"claims": {"aligned": bool(dependencies), "causal_before": before[1], "verified_before": before[0],
                           "causal_after": after[1], "verified_after": after[0],
                           "dependencies": [{"status": s, "true": t} for s, t in dependencies],
                           "alternatives": [{"confirmed": c} for c in alternatives]}}  # fmt: skip

    shown = [("verified", True), ("verified", False), ("refuted", True), ("verified", None)]
    records = [claims(shown, [True], (2, 4), (3, 3)), claims([], [True, False], (1, 2), (1, 2))]
    summary = intro.summarise_claims(records)
    assert summary["items"] == 2 and summary["aligned"] == 1
    assert summary["dependency_claims"] == 2 and summary["dependency_precision"] == 0.5
    assert summary["answer_step_dependencies"] == 1  # no gold dependencies to judge it by
    assert summary["refuted_dependencies"] == 1 and summary["refuted_true_share"] == 1.0
    assert summary["alternative_claims"] == 3 and summary["alternative_precision"] == pytest.approx(2 / 3)
    assert summary["claims_judged"] == 5 and summary["precision"] == pytest.approx(3 / 5)
    assert summary["verified_share_before"] == 0.5 and summary["verified_share_after"] == 0.8


def test_reliance_summary_on_hand_made_records():
    def reliance(steps, settled, mistakes, changed, filler):
        return {"reliance": {"steps": steps, "settled_after": settled, "mistakes": mistakes,
                             "mistakes_changed": changed, "filler_changed": filler}}  # fmt: skip

    records = [reliance(4, 2, 3, 2, True), reliance(2, 0, 1, 0, False), reliance(3, None, 0, 0, True)]
    summary = intro.summarise_reliance([*records, {"reliance": None}])
    assert summary["items"] == 3 and summary["unsettled"] == 1 and summary["needs_chain"] == 0.5
    assert summary["mistakes"] == 4 and summary["mistakes_changed_share"] == 0.5
    assert summary["filler_runs"] == 3 and summary["filler_changed_share"] == pytest.approx(2 / 3)
    assert summary["settled_fraction"] == pytest.approx((2 / 4 + 0) / 2)


# --- the run's calibration --------------------------------------------------------------------------------------


def test_calibrate_run_keeps_a_complete_stored_calibration_and_else_fits_all(monkeypatch):
    complete = Calibration(2.0, step_temperature=1.5)
    info, settings = intro.calibrate_run(None, None, complete, ["arithmetic"], intro.IntrospectionSettings())
    assert settings.calibration is complete and info["source"] == "stored" and "n_items" not in info
    answer_only = Calibration(2.0)
    info, settings = intro.calibrate_run(None, None, answer_only, ["arithmetic"],
                                         intro.IntrospectionSettings(calibration_items=0))  # fmt: skip
    assert settings.calibration is answer_only and info["step_temperature"] is None
    torch.manual_seed(0)
    answers = [AnswerRecord(torch.randn(2, 7) * 4, torch.tensor([1, 2]), k % 3 != 0) for k in range(12)]
    steps = [StepRecord(torch.randn(3, 7) * 4, torch.tensor([0, 1, 2]), k % 2 == 0) for k in range(12)]
    reference_nll = (TOKEN_TEMPERATURES - 1.5).abs()
    found = CalibrationSet(answers, steps, [2.0 + k / 10 for k in range(12)], {3, 4}, reference_nll, 30)
    asked = []
    monkeypatch.setattr(intro_calibration, "calibration_records", lambda m, t, items: asked.append(items) or found)
    info, settings = intro.calibrate_run(None, None, answer_only, ["arithmetic", "logic"],
                                         intro.IntrospectionSettings(calibration_items=3))  # fmt: skip
    assert [i.task for i in asked[0]] == ["arithmetic"] * 3 + ["logic"] * 3  # seed + 1000, as many per task
    assert info["source"] == "fitted" and info["n_answered"] == 12 and info["n_steps"] == 12
    assert settings.calibration == fit_calibration(answers, True, steps, found.question_nlls, {3, 4}, reference_nll)
    assert settings.calibration.step_temperature is not None and settings.calibration.question_nll_bound is not None
    assert in_unit(info["calibration_set_step_ece_after"]) and in_unit(info["calibration_set_answer_ece_after"])


# --- one item per task, end to end on a tiny random SAGE --------------------------------------------------


def in_unit(value: float) -> bool:
    return 0 <= value <= 1


def test_measure_item_runs_on_a_tiny_sage_and_gives_shares():
    tokenizer = with_sage_prompt(load_tokenizer())  # a fresh one: the session fixture keeps no template
    intro.check_prompt_format(tokenizer)
    model = make_sage(tokenizer, max_position_embeddings=512)
    calibration = Calibration(1.5, step_temperature=2.0)
    # engine rankings only: the baselines have their own test
    settings = intro.IntrospectionSettings(max_new_tokens=20, resamples=2, check_samples=2, calibration=calibration,
                                           baselines=())  # fmt: skip
    results = []
    for task in intro.TASKS:
        (item,) = generate_items(task, 1, intro.EVAL_SEED, "heldout")
        result = intro.measure_item(model, tokenizer, item, settings, own=False, decision=True, faithfulness=True)
        assert result["aligned"], f"the gold chain of {task} did not line up with the report's steps"
        assert len(result["dependency"]) == sum(bool(d) for d in item.dependencies)
        assert set(result["seconds"]) == set(intro.PARTS)
        results.append(result)
    summary = intro.summarise(results)
    assert summary["items"] == 4 and summary["misaligned"] == 0
    for method in intro.ENGINE_RANKINGS:
        dependency = summary["dependency"][method]
        assert dependency["steps"] > 0 and dependency["distractor_steps"] > 0
        assert all(in_unit(dependency[k]) for k in ("top1", "precision@3", "recall@3", "distractor_wins"))
        assert all(math.isfinite(v) for v in summary["faithfulness"][method].values())
    for key in ("alternatives", "alternatives_low"):
        alternatives = summary[key]
        assert alternatives["items"] == 4 and 0 <= alternatives["verified"] <= alternatives["alternatives"]
        assert alternatives["alternatives"] == 0 or in_unit(alternatives["verified_share"])
    calibration = summary["calibration"]
    assert calibration["items"] == 4
    assert all(in_unit(calibration[k]) for k in ("accuracy", "answer_ece_before", "answer_ece_after"))
    assert calibration["steps"] == 0 or all(in_unit(calibration[k]) for k in ("step_accuracy", "step_ece_before"))
    assert summary["decision"]["items"] == 4 and summary["claims"]["items"] == 4  # decision runs the own part
    assert summary["claims"]["causal_after"] == sum(r["claims"]["causal_after"] for r in results)
    assert len(intro.goals(summary)) == 12


def test_decision_claim_and_calibration_records_on_a_chain_with_an_answer():
    """A random model's own chain rarely reaches <|answer|>: the gold chain (teacher-forced) has one, so the
    resampling, the claims' checks against the ground truth and the step calibration all run on it."""
    tokenizer = with_sage_prompt(load_tokenizer())
    model = make_sage(tokenizer, max_position_embeddings=512)
    calibration = Calibration(1.5, step_temperature=2.0)
    settings = intro.IntrospectionSettings(max_new_tokens=20, resamples=3, check_samples=4, calibration=calibration)
    (item,) = generate_items("linear_equation", 1, intro.EVAL_SEED, "heldout")
    # min_alternative_prob 0: a random model's calibrated alternatives are all tiny
    report = explain(model, tokenizer, item.question, chain=intro.gold_chain(item), threshold=0.05,
                     min_alternative_prob=0.0, max_decision_points=2, alternatives=2, own_explanation=False,
                     calibration=calibration)  # fmt: skip
    decision = intro.decision_records(model, tokenizer, report, item, settings)
    assert decision["skipped"] is None and decision["greedy"] == item.answer
    assert decision["default_score"] == report.options.decision_score
    assert len(decision["p"]) == len(item.steps) + 1 and all(in_unit(p) for p in decision["p"])
    assert [s["step"] for s in decision["steps"]] == list(range(len(item.steps)))
    for record in decision["steps"]:
        assert set(intro.STEP_SCORES) <= set(record)  # a SAGE model: the meta scores too
        assert all(in_unit(record[k]) for k in ("effect", "margin", "alternatives", "entropy", "meta", "combined"))
        assert record["combined"] == max(record["margin"], record["meta"])
    assert [p["position"] for p in decision["shown"]] == [d.position for d in report.decision_points]
    assert all(0 <= p["other_answers"] <= settings.resamples for p in decision["shown"])
    counts = intro.alternative_counts(report)
    assert counts["decision_points"] == len(report.decision_points) <= 2 and 0 <= counts["verified"] <= 4
    claims = intro.claim_records(model, tokenizer, report, item, settings)
    assert claims["aligned"] and claims["causal_before"] == report.validation.total  # as first stated
    assert claims["verified_before"] == report.validation.verified
    shown = [c for c in report.claims if c.kind == "dependency" and c.status == "verified"]
    assert sum(d["status"] == "verified" for d in claims["dependencies"]) == len(shown) > 0
    assert all(isinstance(d["true"], bool) for d in claims["dependencies"] if d["step"] < len(item.steps))
    verified = [c for c in report.claims if c.kind == "alternative" and c.status == "verified"]
    assert len(claims["alternatives"]) == len(verified)
    assert all(a["agreement"] in (0, 0.25, 0.5, 0.75, 1) for a in claims["alternatives"])
    record = intro.calibration_record(report, item)
    assert record["answered"] and record["correct"] and record["calibrated"] == report.calibrated_answer_confidence
    assert [s["correct"] for s in record["steps"]] == [True] * len(item.steps)
    for step, measured in zip(report.steps, record["steps"], strict=False):
        assert measured["confidence"] == step.confidence and measured["calibrated"] == step.calibrated_confidence
        assert in_unit(measured["calibrated"])
    reliance = intro.reliance_record(report)
    assert reliance["steps"] == len(item.steps) and reliance["mistakes"] >= reliance["mistakes_changed"]


def finite(value) -> bool:
    return value is not None and math.isfinite(value)


def test_measure_introspection_ranks_the_baselines_on_the_same_steps_as_eq7():
    pytest.importorskip("captum")
    pytest.importorskip("sklearn")
    tokenizer = with_sage_prompt(load_tokenizer())
    model = make_sage(tokenizer, max_position_embeddings=512)
    settings = intro.IntrospectionSettings(n=1, own_items=1, decision_items=1, faithfulness_items=1,
                                           calibration_items=1, max_new_tokens=20, resamples=2,
                                           baselines=("attention", "lime"), baseline_samples=8)  # fmt: skip
    stored = Calibration(1.5, (0.2, 0.9), (0.1, 0.6))
    document = intro.measure_introspection(model, tokenizer, settings, progress=False, loaded_calibration=stored)
    json.dumps(document, allow_nan=False)  # JSON-ready: NaN became None
    methods = ["eq7", "attention_only", "gradient_only", "attention", "lime"]
    assert document["methods"] == methods and document["calibration"]["answer_temperature"] == 1.5
    assert document["calibration"]["answer_calibration"] == "temperature+isotonic"  # no chain answered: stored
    assert document["settings"]["calibration"]["temperature"] == 1.5
    assert set(document["summary"]) == {*intro.TASKS, "overall"}
    for group, summary in document["summary"].items():
        assert summary["misaligned"] == 0, group
        dependency, faithfulness = summary["dependency"], summary["faithfulness"]
        steps = dependency["eq7"]["steps"]
        assert steps > 0 and faithfulness["steps"] == steps, group
        for method in methods:
            assert dependency[method]["steps"] == steps, (group, method)
            assert all(in_unit(dependency[method][k]) for k in ("top1", "precision@3", "recall@3")), (group, method)
            assert all(finite(v) for v in faithfulness[method].values()), (group, method)
        timed = summary["timings"]["methods"]
        assert list(timed) == ["eq7", "attention", "lime"]
        assert all(t["steps"] > 0 and finite(t["seconds_per_step"]) for t in timed.values()), group
        assert timed["attention"]["steps"] == timed["lime"]["steps"] == steps  # one baseline call per ranked step
        assert all(finite(p["seconds_per_item"]) for p in summary["timings"]["parts"].values()), group
        calibration = summary["calibration"]
        assert all(in_unit(calibration[k]) for k in ("accuracy", "answer_ece_before", "answer_ece_after")), group
        for key in ("alternatives", "alternatives_low"):  # a random model may offer no alternative to verify
            alternatives = summary[key]
            assert alternatives["alternatives"] == 0 or in_unit(alternatives["verified_share"]), (group, key)
        assert summary["decision"]["items"] == summary["claims"]["items"] == summary["items"]
    overall = document["summary"]["overall"]
    assert all(in_unit(overall["dependency"][m]["distractor_wins"]) for m in methods)
    assert overall["items"] == 4 and len(document["goals"]) == 12
    assert all(len(document["items"][t]) == 1 for t in intro.TASKS)
