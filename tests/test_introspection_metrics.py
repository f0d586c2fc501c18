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
from sagenano.inverse import explain
from sagenano.inverse.calibration import TEMPERATURE_GRID
from sagenano.inverse.confidence import AnswerCalibration
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


def test_step_confidence_at_temperature_one_is_the_mean_token_probability():
    torch.manual_seed(0)
    logits, ids = torch.randn(3, 11), torch.tensor([4, 0, 9])
    expected = logits.softmax(-1)[torch.arange(3), ids].mean()
    got = intro.step_confidence_at(logits, ids, torch.tensor([1.0, 1000.0]))
    assert got[0] == pytest.approx(float(expected), rel=1e-5)
    assert got[1] == pytest.approx(1 / 11, rel=1e-2)  # a huge temperature flattens to uniform


def test_fit_step_temperature_cools_an_underconfident_step():
    grid = TEMPERATURE_GRID
    # confidences that fall as T grows: always correct, the lowest temperature fits best; always wrong, the highest
    confidences = torch.linspace(0.9, 0.1, len(grid))
    assert intro.fit_step_temperature([(confidences, True)] * 4) == pytest.approx(float(grid[0]))
    assert intro.fit_step_temperature([(confidences, False)] * 4) == pytest.approx(float(grid[-1]))
    assert intro.fit_step_temperature([]) is None


def test_goals_fail_when_nothing_was_measured():
    nan = math.nan
    overall = {
        "dependency": {m: {"top1": nan, "distractor_wins": nan} for m in intro.ENGINE_RANKINGS},
        "alternatives": {"verified_share": nan},
        "alternatives_low": {"verified_share": 1.0},
        "calibration": {"answer_ece_after": nan},
    }
    results = {g["goal"]: g["result"] for g in intro.goals(overall)}
    assert results["alternatives verified (low threshold)"] == "PASS"
    assert [r for g, r in results.items() if "low threshold" not in g] == ["FAIL"] * 5


# --- one item per task, end to end on a tiny random SAGE --------------------------------------------------


def in_unit(value: float) -> bool:
    return 0 <= value <= 1


def test_measure_item_runs_on_a_tiny_sage_and_gives_shares():
    tokenizer = with_sage_prompt(load_tokenizer())  # a fresh one: the session fixture keeps no template
    intro.check_prompt_format(tokenizer)
    model = make_sage(tokenizer, max_position_embeddings=512)
    settings = intro.IntrospectionSettings(
        max_new_tokens=20, resamples=2, answer_calibration=AnswerCalibration(1.5), step_temperature=2.0, baselines=()
    )  # engine rankings only: the baselines have their own test
    results = []
    for task in intro.TASKS:
        (item,) = generate_items(task, 1, intro.EVAL_SEED, "heldout")
        result = intro.measure_item(model, tokenizer, item, settings, own=True, decision=True, faithfulness=True)
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
    assert summary["decision"]["items"] == 4
    assert len(intro.goals(summary)) == 6


def test_decision_alternative_and_calibration_records_on_a_chain_with_an_answer():
    """A random model's own chain rarely reaches <|answer|>: the gold chain (teacher-forced) has one, so the
    resampling, the alternatives' checks and the step calibration all run on it."""
    tokenizer = with_sage_prompt(load_tokenizer())
    model = make_sage(tokenizer, max_position_embeddings=512)
    settings = intro.IntrospectionSettings(max_new_tokens=20, resamples=3, answer_calibration=AnswerCalibration(1.5),
                                           step_temperature=2.0)  # fmt: skip
    (item,) = generate_items("linear_equation", 1, intro.EVAL_SEED, "heldout")
    report = explain(model, tokenizer, item.question, chain=intro.gold_chain(item), threshold=0.05,
                     max_decision_points=2, alternatives=2, own_explanation=False)  # fmt: skip
    decision = intro.decision_records(model, tokenizer, report, item, settings)
    assert decision["skipped"] is None and decision["greedy"] == item.answer
    assert len(decision["p"]) == len(item.steps) + 1 and all(in_unit(p) for p in decision["p"])
    assert [s["step"] for s in decision["steps"]] == list(range(len(item.steps)))
    for record in decision["steps"]:
        assert all(in_unit(record[k]) for k in ("effect", "entropy", "meta", "combined"))
        assert record["combined"] == max(record["entropy"], record["meta"])
    counts = intro.alternative_counts(report)
    assert counts["decision_points"] == 2 and counts["alternatives"] == 4 and 0 <= counts["verified"] <= 4
    calibration = intro.calibration_record(model, report, item, settings)
    assert calibration["answered"] and calibration["correct"]  # the gold answer, forced
    assert [s["correct"] for s in calibration["steps"]] == [True] * len(item.steps)
    for step, record in zip(report.steps, calibration["steps"], strict=False):
        assert record["confidence"] == step.confidence and in_unit(record["calibrated"])


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
    stored = AnswerCalibration(1.5, (0.2, 0.9), (0.1, 0.6))
    document = intro.measure_introspection(model, tokenizer, settings, progress=False, loaded_calibration=stored)
    json.dumps(document, allow_nan=False)  # JSON-ready: NaN became None
    methods = ["eq7", "attention_only", "gradient_only", "attention", "lime"]
    assert document["methods"] == methods and document["calibration"]["answer_temperature"] == 1.5
    assert document["calibration"]["answer_calibration"] == "temperature+isotonic"
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
        assert summary["decision"]["items"] == summary["items"]
    overall = document["summary"]["overall"]
    assert all(in_unit(overall["dependency"][m]["distractor_wins"]) for m in methods)
    assert overall["items"] == 4 and len(document["goals"]) == 6
    assert all(len(document["items"][t]) == 1 for t in intro.TASKS)
