"""The `sage-nano` command, run as a real process the way a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SAGE_NANO = str(Path(sys.executable).with_name("sage-nano"))


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}
    result = subprocess.run([SAGE_NANO, *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_help_explains_the_commands():
    out = run("--help").stdout
    for command in ("explain", "tokenizer", "model"):
        assert command in out
    assert "--max-new-tokens" in run("explain", "--help").stdout


def test_explain_reports_the_trace_and_says_the_model_is_untrained():
    out = run("explain", "If 3x + 2 = 14, what is x?", "--max-new-tokens", "12", "--model", "preset:pico").stdout
    assert "If 3x + 2 = 14, what is x?" in out
    assert "untrained" in out, "an untrained model must be announced plainly"
    assert "steps" in out and "most uncertain tokens" in out


def test_explain_json_on_the_default_model():
    from sagenano.loading import shipped_model_dir

    report = json.loads(run("explain", "Tom has 3 apples.", "--max-new-tokens", "6", "--json", "-").stdout)
    assert report["question"] == "Tom has 3 apples." and 1 <= len(report["tokens"]) <= 6
    assert report["prompt"] == "<|question|>Tom has 3 apples.<|step|>", "SAGE models get their question format"
    assert report["trained"] is (shipped_model_dir() / "config.json").is_file() and report["steps"]


def test_explain_on_a_saved_checkpoint(tmp_path):
    run("model", "init", "--out", str(tmp_path / "pico"), "--preset", "pico")
    assert (tmp_path / "pico" / "model.safetensors").is_file()
    out_file = tmp_path / "trace.json"
    run("explain", "2 + 2 = ?", "--model", str(tmp_path / "pico"), "--max-new-tokens", "5", "--json", str(out_file))
    report = json.loads(out_file.read_text())
    assert report["model"] == str(tmp_path / "pico") and len(report["tokens"]) == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["explain", ""], "empty"),
        (["explain", "hi", "--model", "/no/such/model"], "no model at"),
        (["explain", "hi", "--steps", "chapters"], "unknown step strategy"),
        (["explain", "word " * 2000], "context"),
        (["model", "init", "--out", "x", "--preset", "giga"], "unknown preset"),
        (["tokenizer", "train", "/no/such/file.txt"], "not found"),
    ],
)
def test_bad_input_exits_with_a_clear_message(args, message):
    result = run(*args, check=False)
    assert result.returncode == 2
    assert message in (result.stdout + result.stderr)
    assert "Traceback" not in result.stderr


def test_tokenizer_train(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Tom has 12 apples. He buys 30 more.\nStep 1: 12 + 30 = 42.\n" * 50)
    run("tokenizer", "train", str(corpus), "--out", str(tmp_path / "tok"), "--vocab-size", "300")
    from sagenano.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tmp_path / "tok")
    assert len(tokenizer) <= 300
    assert tokenizer.tokenize("123") == ["1", "2", "3"]


def test_model_info_counts_nano():
    out = run("model", "info", "nano").stdout
    total = next(line for line in out.splitlines() if "total" in line)
    count = int("".join(ch for ch in total if ch.isdigit()))
    assert 3.6e9 <= count <= 4.4e9


def test_data_synth_writes_checked_items(tmp_path):
    out = tmp_path / "logic.jsonl"
    run("data", "synth", "--task", "logic", "--n", "25", "--seed", "3", "--out", str(out), "--split", "heldout")
    from sagenano.data import check_item, iter_jsonl

    items = list(iter_jsonl(out))
    assert len(items) == 25 and all(item.split == "heldout" and not check_item(item) for item in items)
    bad = run("data", "synth", "--task", "poetry", "--n", "2", "--out", str(tmp_path / "x.jsonl"), check=False)
    assert bad.returncode == 2 and "arithmetic" in bad.stdout + bad.stderr
