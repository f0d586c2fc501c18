"""`sage-nano eval`: prompts, generation and option log-likelihood scoring, per-item JSONL, resume, torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from conftest import make_hf_model, make_sage, needs_benchmarks
from sagenano.eval.benchmarks import get_task, load_items
from sagenano.eval.runner import (
    EvalSettings,
    build_prompt,
    continuation_logprobs,
    evaluate_task,
    loglik_context,
    read_records,
)
from sagenano.generation import trace_generate
from sagenano.loading import shipped_model_dir

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "160"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sagenano.cli", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tiny_checkpoint(tmp_path, tokenizer) -> Path:
    folder = tmp_path / "tiny"
    make_sage(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@needs_benchmarks
def test_a_five_item_run_end_to_end_then_resumes_without_redoing_items(tmp_path, tiny_checkpoint):
    out = tmp_path / "eval"
    common = ["eval", "--model", str(tiny_checkpoint), "--tasks", "gsm8k", "--max-new-tokens", "8", "--out", str(out)]
    first = subprocess.run(cli(*common, "--limit", "3"), env=ENV, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    answered = lines(out / "gsm8k.jsonl")
    assert len(answered) == 3
    # An interruption mid-write leaves half a line: it is ignored and that item answered again.
    with (out / "gsm8k.jsonl").open("a") as sink:
        sink.write(answered[0][:40])
    second = subprocess.run(cli(*common, "--limit", "5"), env=ENV, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    records = read_records(out / "gsm8k.jsonl")
    assert len(records) == 5 and lines(out / "gsm8k.jsonl")[:3] == answered, "the first 3 were kept, not redone"
    gold = [item.gold for item in load_items("gsm8k", limit=5)]
    assert [r["gold"] for r in records] == gold
    for record in records:
        assert set(record) >= {"question", "chain", "predicted", "gold", "correct", "confidence"}
        assert record["correct"] == (record["predicted"] == record["gold"])
    summary = json.loads((out / "summary.json").read_text())["tasks"][0]
    assert summary["n"] == 5 and summary["correct"] == sum(r["correct"] for r in records)
    assert "gsm8k" in second.stdout and "accuracy" in second.stdout


@needs_benchmarks
def test_two_torchrun_processes_write_what_one_process_writes(tmp_path):
    common = ["eval", "--model", str(shipped_model_dir()), "--tasks", "synth_arithmetic,arc_easy", "--limit", "5",
              "--max-new-tokens", "48", "--batch-size", "1"]  # fmt: skip
    one = subprocess.run(cli(*common, "--out", str(tmp_path / "one")), env=ENV, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(free_port()), "-m", "sagenano.cli"]  # fmt: skip
    two = subprocess.run([*torchrun, *common, "--out", str(tmp_path / "two")], env=ENV, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert two.returncode == 0, two.stderr[-2000:]
    for task in ("synth_arithmetic", "arc_easy"):
        a, b = read_records(tmp_path / "one" / f"{task}.jsonl"), read_records(tmp_path / "two" / f"{task}.jsonl")
        assert len(a) == 5
        assert [(r["id"], r["chain"], r["predicted"], r["correct"]) for r in a] == [
            (r["id"], r["chain"], r["predicted"], r["correct"]) for r in b
        ]
        assert not list((tmp_path / "two").glob(f"{task}.rank*.jsonl")), "rank files are merged and removed"
    summaries = [json.loads((tmp_path / d / "summary.json").read_text())["tasks"] for d in ("one", "two")]
    assert summaries[0] == summaries[1]


@needs_benchmarks
def test_option_loglikelihoods_equal_one_forward_pass_per_option(tokenizer):
    model = make_hf_model("llama", len(tokenizer))
    item = load_items("arc_easy", limit=1)[0]
    context, continuations = loglik_context(item, [], sage=False)
    batched = continuation_logprobs(model, tokenizer, context, continuations)
    context_ids = tokenizer(context, add_special_tokens=False).input_ids
    for continuation, value in zip(continuations, batched, strict=True):
        ids = context_ids + tokenizer(continuation, add_special_tokens=False).input_ids
        logprobs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
        alone = sum(float(logprobs[t - 1, ids[t]]) for t in range(len(context_ids), len(ids)))
        assert value == pytest.approx(alone, abs=1e-4)


@needs_benchmarks
def test_loglik_scoring_picks_the_best_option_and_reports_its_share(tmp_path, tokenizer):
    model = make_hf_model("llama", len(tokenizer))
    summary = evaluate_task(model, tokenizer, "arc_easy", tmp_path, EvalSettings(limit=3, scoring="loglik"),
                            progress=False)  # fmt: skip
    records = read_records(tmp_path / "arc_easy.jsonl")
    assert summary["n"] == 3 and len(records) == 3
    for record in records:
        scores = record["option_logprobs"]
        best = max(range(len(scores)), key=scores.__getitem__)
        assert record["predicted"] == "ABCDE"[best]
        assert record["confidence"] == pytest.approx(torch.tensor(scores).softmax(0).max().item())
    with pytest.raises(ValueError, match="not multiple choice"):
        evaluate_task(model, tokenizer, "gsm8k", tmp_path, EvalSettings(limit=1, scoring="loglik"), progress=False)


@needs_benchmarks
def test_prompts_follow_the_model_format_and_carry_the_exemplars():
    items = load_items("gsm8k", limit=2)
    sage = build_prompt(items[1], [items[0]], sage=True)
    assert sage.startswith("<|question|>" + items[0].question) and sage.endswith(f"{items[1].question}<|step|>")
    assert f"<|answer|>{items[0].gold}<|endoftext|>" in sage
    plain = build_prompt(items[1], [items[0]], sage=False)
    assert plain.endswith(f"Question: {items[1].question}\nAnswer: Let's think step by step.")
    assert f"The answer is {items[0].gold}." in plain


@needs_benchmarks
def test_a_prompt_longer_than_the_context_is_recorded_as_skipped(tmp_path, tokenizer):
    model = make_sage(tokenizer, max_position_embeddings=64)
    summary = evaluate_task(model, tokenizer, "logiqa", tmp_path, EvalSettings(limit=2, max_new_tokens=8),
                            progress=False)  # fmt: skip
    records = read_records(tmp_path / "logiqa.jsonl")
    assert summary["skipped"] == 2 and all(r["skipped"] and r["correct"] is False for r in records)


def test_the_shipped_model_answers_synthetic_items_with_its_answer_probability(tmp_path):
    from sagenano.loading import load_model

    loaded = load_model(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would print into the progress bar (a grad-tracking rescore did)
        settings = EvalSettings(limit=4, max_new_tokens=96, calibration=loaded.calibration)
        evaluate_task(loaded.model, loaded.tokenizer, "synth_linear_equation", tmp_path, settings, progress=False)
    records = read_records(tmp_path / "synth_linear_equation.jsonl")
    answered = [r for r in records if r["predicted"] is not None]
    assert answered, "the trained model writes <|answer|>"
    trace = trace_generate(loaded.model, loaded.tokenizer, build_prompt(load_items("synth_linear_equation", limit=1)[0],
                           [], sage=True), max_new_tokens=96, attention="none", chat=False)  # fmt: skip
    assert trace.text == records[0]["chain"], "batched chains equal a chain generated alone"
    task = get_task("synth_linear_equation")
    assert records[0]["predicted"] == task.extract(trace.text, load_items("synth_linear_equation", limit=1)[0])


def test_synthetic_evaluation_scores_the_training_distribution_with_a_recipes_task_options(sage, tokenizer):
    from sagenano.eval.task_accuracy import evaluate_synthetic
    from sagenano.inverse.confidence import Calibration

    report = evaluate_synthetic(sage, tokenizer, n_per_task=2, tasks=("logic",), split="train",
                                task_options={"logic": {"attribute_pool": "wide"}})  # fmt: skip
    assert report["split"] == "train" and report["accuracy"]["all logic"]["n"] == 2
    assert "calibrated_answer_prob_ece" not in report["calibration"]  # the model given has no calibration
    calibrated = evaluate_synthetic(sage, tokenizer, n_per_task=2, tasks=("logic",),
                                    calibration=Calibration(2.0, (0.0, 1.0), (0.25, 0.75)))  # fmt: skip
    assert 0 <= calibrated["calibration"]["calibrated_answer_prob_ece15"] <= 1
    with pytest.raises(ValueError, match="attribute_pool"):  # the options reach the generator
        evaluate_synthetic(sage, tokenizer, n_per_task=2, tasks=("logic",), split="train",
                           task_options={"logic": {"attribute_pool": "huge"}})  # fmt: skip
