"""The `sage-nano` command: run as a real process the way a user runs it, and in this process (typer's runner)
where a check reads only an exit code and a message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from sagenano.cli import app

SAGE_NANO = str(Path(sys.executable).with_name("sage-nano"))


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`sage-nano ARGS` as a real process of the installed entry point."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}
    result = subprocess.run([SAGE_NANO, *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def invoke(*args: str, check: bool = True) -> Result:
    """`sage-nano ARGS` in this process: the same commands without a process start and imports per call (the
    conftest keeps the hub offline). An error the command did not handle is `result.exception`, not a traceback."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "160"})
    if check:
        assert result.exit_code == 0, result.output
    return result


def handled(result: Result) -> bool:
    """The command ended through its own exit (a message and a code), not by an uncaught exception."""
    return result.exception is None or isinstance(result.exception, SystemExit)


def test_help_explains_the_commands():
    out = run("--help").stdout
    for command in ("explain", "tokenizer", "model"):
        assert command in out
    assert "--max-new-tokens" in run("explain", "--help").stdout
    serve_help = run("serve", "--help").stdout
    assert "127.0.0.1" in serve_help and "--time-limit" in serve_help and "Retry-After" in serve_help


def test_help_and_import_do_not_load_torch():
    # `sage-nano --help` answers without importing torch or transformers (seconds here); the names load on use.
    code = (
        "import sys, sagenano, sagenano.cli\n"
        "assert not {'torch', 'transformers'} & set(sys.modules), 'imported at startup'\n"
        "assert callable(sagenano.explain) and 'pico' in sagenano.PRESETS and 'torch' in sys.modules\n"
        "try:\n    sagenano.no_such_name\nexcept AttributeError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "has no attribute 'no_such_name'" in result.stdout


def test_explain_on_the_default_model_prints_a_readable_report():
    out = run("explain", "If 3x + 2 = 14, what is x?").stdout
    assert "If 3x + 2 = 14, what is x?" in out and "Reasoning chain" in out
    assert "causal claims held under intervention" in out and "Explanation (intermediate)" in out


def test_explain_json_and_html_on_the_default_model(tmp_path):
    from sagenano.inverse import Report
    from sagenano.loading import shipped_model_dir

    report = Report.from_json(run("explain", "Tom has 3 apples.", "--max-new-tokens", "12", "--json", "-").stdout)
    assert report.question == "Tom has 3 apples." and 1 <= len(report.tokens) <= 12
    assert report.prompt == "<|question|>Tom has 3 apples.<|step|>", "SAGE models get their question format"
    assert report.model.endswith("model") == (shipped_model_dir() / "config.json").is_file()
    page = tmp_path / "report.html"
    out = run("explain", "Tom has 3 apples.", "--max-new-tokens", "12", "--depth", "novice", "--html", str(page)).stdout
    assert "Explanation (novice)" in out and page.read_text().startswith("<!doctype html>")


def test_explain_on_an_untrained_saved_checkpoint_says_so(tmp_path):
    run("model", "init", "--out", str(tmp_path / "pico"), "--preset", "pico")
    assert (tmp_path / "pico" / "model.safetensors").is_file()
    out_file = tmp_path / "report.json"
    run("explain", "2 + 2 = ?", "--model", str(tmp_path / "pico"), "--max-new-tokens", "5", "--json", str(out_file))
    assert json.loads(out_file.read_text())["model"] == str(tmp_path / "pico")
    out = run("explain", "2 + 2 = ?", "--model", "preset:pico", "--max-new-tokens", "5", "--no-validate").stdout
    assert "untrained" in out, "an untrained model must be announced plainly"


def test_trace_shows_the_raw_measurements():
    out = run("trace", "If 3x + 2 = 14, what is x?", "--max-new-tokens", "12", "--model", "preset:pico").stdout
    assert "steps" in out and "most uncertain tokens" in out


def test_a_model_folder_without_a_tokenizer_is_refused(tmp_path):
    invoke("model", "init", "--out", str(tmp_path / "pico"), "--preset", "pico")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "pico" / name).unlink(missing_ok=True)
    result = invoke("explain", "hi", "--model", str(tmp_path / "pico"), check=False)
    assert result.exit_code == 2 and "has no tokenizer" in result.stdout + result.stderr
    assert handled(result)


def test_non_utf8_bytes_on_the_command_line_are_refused():
    # a real process: the bytes reach the command through the OS's argv decoding
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([SAGE_NANO, "explain", b"caf\xe9 \xff?"], capture_output=True, env=env, timeout=300)
    assert result.returncode == 2 and b"UTF-8" in result.stdout + result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["explain", ""], "no visible text"),
        (["explain", "hi", "--model", "/no/such/model"], "no model at"),
        (["explain", "hi", "--steps", "chapters"], "unknown step strategy"),
        (["explain", "word " * 2000], "limit is 4000"),
        (["explain", "1 " * 1500], "context"),
        (["explain", "hi", "--depth", "guru"], "unknown depth"),
        (["calibrate", "--tasks", "poetry"], "unknown tasks"),
        (["model", "init", "--out", "x", "--preset", "giga"], "unknown preset"),
        (["tokenizer", "train", "/no/such/file.txt"], "not found"),
        (["serve", "--model", "/no/such/model"], "no model at"),
        (["serve", "--queue", "0"], "max_pending must be at least 1"),
        (["serve", "--threads", "0"], "greater than or equal to 1"),
        (["quantize", "--out", "never-written", "--bits", "3"], "--bits must be 4 or 8"),
    ],
)
def test_bad_input_exits_with_a_clear_message(args, message):
    result = invoke(*args, check=False)
    assert result.exit_code == 2
    assert message in (result.stdout + result.stderr)
    assert handled(result)


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: what is checked here must be refused before any model loads."""

    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr("sagenano.loading.load_model", load_model)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["explain", ""], "the question has no visible text"),
        (["explain", "   "], "the question has no visible text"),
        (["explain", "x" * 4001], "the question has 4001 characters; the limit is 4000"),
        (["explain", "hi", "--threshold", "5"], "threshold: Input should be less than or equal to 1 (got 5.0)"),
        (["explain", "hi", "--alternatives", "0"], "alternatives: Input should be greater than or equal to 1"),
        (["explain", "hi", "--max-new-tokens", "0"], "max_new_tokens"),
        (["explain", "hi", "--steps", "chapters"], "unknown step strategy 'chapters'"),
    ],
)
def test_explain_checks_its_input_before_the_model_loads(no_model, args, message):
    start = time.perf_counter()
    result = invoke(*args, check=False)
    assert time.perf_counter() - start < 2.0
    out = result.stdout + result.stderr
    assert result.exit_code == 2 and message in out and handled(result), out
    assert len(out.strip().splitlines()) == 1, out  # one line


def test_explain_refuses_an_empty_question_at_once_as_a_process():
    """The user's view: a whole `sage-nano explain ""` (start, imports, check) ends in well under 2 s."""
    for args in (["explain", ""], ["explain", "hi", "--threshold", "5"]):
        start = time.perf_counter()
        result = run(*args, check=False)
        assert time.perf_counter() - start < 2.0 and result.returncode == 2
        assert "error:" in result.stderr and not result.stdout and "Traceback" not in result.stderr


def test_ctrl_c_says_interrupted_and_exits_130(monkeypatch):
    def load_model(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("sagenano.loading.load_model", load_model)
    result = invoke("explain", "hi", check=False)
    assert result.exit_code == 130 and "interrupted" in result.stdout + result.stderr


def test_phase_line_follows_explains_phases():
    from sagenano.cli.common import phase_line

    with phase_line(False) as progress:
        assert progress is None  # `--json -`: stdout is the report, no progress line
    with phase_line(True) as progress:
        progress("phase", {"name": "decision_points"})
        progress("chain", {"text": "3 + 4"})  # other events are ignored


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
    bad = invoke("data", "synth", "--task", "poetry", "--n", "2", "--out", str(tmp_path / "x.jsonl"), check=False)
    assert bad.exit_code == 2 and "arithmetic" in bad.stdout + bad.stderr


def test_calibrate_stores_a_calibration_beside_the_weights(tmp_path):
    import inspect

    from sagenano.cli import calibrate
    from sagenano.inverse.calibration import CALIBRATION_SEED, load_calibration
    from sagenano.loading import shipped_model_dir

    assert inspect.signature(calibrate).parameters["seed"].default == CALIBRATION_SEED
    if not (shipped_model_dir() / "config.json").is_file():
        pytest.skip("no trained model ships with this checkout")
    shutil.copytree(shipped_model_dir(), tmp_path / "model")
    (tmp_path / "model" / "calibration.json").unlink(missing_ok=True)
    out = run("calibrate", "--model", str(tmp_path / "model"), "--tasks", "linear_equation", "--n", "4").stdout
    stored = load_calibration(tmp_path / "model")
    assert "temperature" in out and stored.temperature > 0 and stored.method == "temperature+isotonic"


def test_calibrating_an_untrained_model_fails_cleanly(tmp_path):
    invoke("model", "init", "--out", str(tmp_path / "pico"), "--preset", "pico")
    result = invoke(
        "calibrate", "--model", str(tmp_path / "pico"), "--tasks", "linear_equation", "--n", "1", check=False
    )
    assert result.exit_code == 2 and "no `<|answer|>`" in result.stderr
    assert handled(result)
