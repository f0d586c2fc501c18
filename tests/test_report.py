"""`sage-nano report`: the whole report builds from a tiny run; every figure is a valid PNG; numbers are traceable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from conftest import make_sage, needs_benchmarks
from sagenano.config import SageConfig
from sagenano.data import generate_items
from sagenano.eval.introspection import IntrospectionSettings, gold_chain
from sagenano.eval.paper_tables import (
    ReportSettings,
    build_report,
    claimed_spans,
    dependency_coverage,
    read_ablations,
    readability,
    summarize_overhead,
    top_claim_changes_answer,
)
from sagenano.eval.paper_tables_markdown import render_ablations
from sagenano.eval.runner import read_records
from sagenano.inverse import explain
from sagenano.tokenizer import load_tokenizer, with_sage_prompt
from sagenano.train.recipe import Recipe

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}


@needs_benchmarks
def test_the_report_builds_from_a_tiny_run_with_every_section_and_figure(tmp_path):
    tokenizer = with_sage_prompt(load_tokenizer())  # the prompt format the shipped model is saved with
    model = make_sage(tokenizer)
    introspection = IntrospectionSettings(n=1, own_items=1, decision_items=1, faithfulness_items=1,
                                          calibration_items=2, resamples=2, baselines=("attention", "lime"),
                                          baseline_samples=8, max_new_tokens=16)  # fmt: skip
    settings = ReportSettings(benchmarks=("gsm8k", "arc_easy", "synth_arithmetic"), limit=2, quality_items=1,
                              max_new_tokens=16, introspection=introspection)  # fmt: skip
    path = build_report(model, tokenizer, "tiny-sage", tmp_path, settings, progress=False)
    text = path.read_text()
    for heading in ("Accuracy per benchmark", "Introspection accuracy", "Dependency tracking", "Explanation quality",
                    "Overhead per component", "Ablations", "Error taxonomy", "Figures"):  # fmt: skip
        assert heading in text, heading
    figures = sorted((tmp_path / "figures").glob("*.png"))
    assert {f.name for f in figures} == {"introspection.png", "reliability.png", "overhead.png"}
    for figure in figures:
        assert f"figures/{figure.name}" in text
        with Image.open(figure) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 100
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {r["task"]: r for r in results["accuracy"]["tasks"]}
    for task in ("gsm8k", "arc_easy", "synth_arithmetic"):
        records = read_records(tmp_path / "eval" / f"{task}.jsonl")
        assert rows[task]["n"] == len(records) == 2, "accuracy rows come from this run's per-item files"
        assert rows[task]["correct"] == sum(r["correct"] for r in records)
    assert rows["arc_easy"]["chance"] == 0.25 and rows["gsm8k"]["chance"] is None
    assert {"eq7", "attention", "lime"} <= set(results["introspection"]["summary"]["overall"]["dependency"])
    assert "No trained ablation models were found" in text
    quality = results["quality"]["items"]
    assert len(quality) == 4, "one item per synthetic task"
    assert all(0 <= q["accuracy"] <= 1 for q in quality if q["accuracy"] is not None)


def test_overhead_ratios_divide_component_time_by_plain_generation():
    rows = [{"plain_seconds": 1.0, "timings": {"generation": 1.5, "scoring": 0.5, "dependencies": 1.0,
                                                "claims": 0.1, "validation": 2.0}},
            {"plain_seconds": 1.0, "timings": {"generation": 0.5, "scoring": 0.5, "claims": 0.1}}]  # fmt: skip
    overhead = summarize_overhead(rows)
    assert overhead["ratios"]["tracking (traced generation)"] == 1.0
    assert overhead["ratios"]["inverse analysis"] == 1.0
    assert abs(overhead["ratios"]["explanation"] - 0.1) < 1e-9 and overhead["ratios"]["validation"] == 1.0
    assert abs(overhead["total_ratio"] - 3.1) < 1e-9


def test_readability_counts_words_and_sentences():
    measured = readability("The model is sure. It copies 12 from the question!")
    assert measured["words"] == 10 and measured["words_per_sentence"] == 5.0 and measured["long_words"] == 0.0


def test_report_command_rejects_unknown_tasks_and_baselines():
    cli = [sys.executable, "-m", "sagenano.cli", "report"]
    bad_task = subprocess.run([*cli, "--benchmarks", "nope"], env=ENV, capture_output=True, text=True, timeout=120)
    assert bad_task.returncode == 2 and "gsm8k" in bad_task.stderr and "Traceback" not in bad_task.stderr
    bad_baseline = subprocess.run([*cli, "--baselines", "magic"], env=ENV, capture_output=True, text=True, timeout=120)
    assert bad_baseline.returncode == 2 and "lime" in bad_baseline.stderr


def test_report_command_names_a_missing_benchmark_file_before_any_work(tmp_path):
    cli = [sys.executable, "-m", "sagenano.cli", "report", "--benchmarks", "gsm8k", "--out", str(tmp_path / "out")]
    for folder in (tmp_path / "absent", tmp_path):  # no folder; a folder without the file
        env = {**ENV, "SAGENANO_BENCHMARKS": str(folder)}
        missing = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
        assert missing.returncode == 2 and "--benchmarks" in missing.stderr and "Traceback" not in missing.stderr
        assert not (tmp_path / "out").exists()


def test_ablation_recipes_change_one_part_each_and_the_report_reads_their_results(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    import train_ablations

    recipes = train_ablations.write_recipes(Path(__file__).parents[1] / "recipes" / "pico.yaml", tmp_path,
                                            list(train_ablations.VARIANTS))  # fmt: skip
    assert recipes["inverse_depth_2"] == recipes["full"], "pico's inverse depth is 2: the same run"
    loaded = {name: Recipe.load(path) for name, path in recipes.items()}
    assert [s.name for s in loaded["forward_only"].stages] == ["base_lm", "cot"]
    assert loaded["no_explanation"].stages[2].lambda_explanation == 0.0
    assert loaded["no_meta_head"].model == {"use_meta_cognitive_head": False}
    assert loaded["inverse_depth_6"].model == {"num_inverse_layers": 6} and loaded["full"].model == {}
    merged = SageConfig.from_name("pico", **loaded["merged_head_groups"].model)
    assert (
        merged.head_groups == {"all": 6}
        and merged.num_attention_heads == SageConfig.from_name("pico").num_attention_heads
    )
    accuracy = {"all arithmetic": {"accuracy": 0.5}, "all logic": {"accuracy": 0.25}}
    (tmp_path / "full" / "eval.json").write_text(json.dumps({"accuracy": accuracy}))
    ablations = read_ablations(tmp_path, "m")
    assert [m["name"] for m in ablations["models"]] == ["full"]
    assert "| full | 50.0% | – | – | 25.0% |" in render_ablations(ablations)


def test_explanation_quality_resolves_claimed_spans_to_the_gold_dependencies():
    tokenizer = with_sage_prompt(load_tokenizer())
    model = make_sage(tokenizer)
    item = generate_items("arithmetic", 1, 7, "heldout")[0]
    report = explain(model, tokenizer, item.question, chain=gold_chain(item), rollouts=False, validate=False)
    dependency_claims = [c for c in report.claims if c.kind == "dependency"]
    for claim in dependency_claims:
        claim.status = "verified"  # as if intervention had confirmed them: the test is about the bookkeeping
    spans = claimed_spans(report)
    assert len(spans) == len(dependency_claims) > 0
    pairs = zip(spans, dependency_claims, strict=True)
    assert all(span.positions == claim.stated["positions"] for (_, span), claim in pairs)
    coverage = dependency_coverage(report, item)
    assert coverage is not None and 0 <= coverage <= 1, "the forced gold chain's steps equal the gold steps"
    assert any(span.source == "question" for _, span in spans)
    assert top_claim_changes_answer(model, tokenizer, report) in (True, False), "the top question span is masked"
