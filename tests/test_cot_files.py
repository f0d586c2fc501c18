"""Your own chain-of-thought files: GSM8K, AQuA-RAT and plain lines read as training items; bad lines reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sagenano.data.cot_files import read_cot_file
from sagenano.data.schema import ReasoningItem
from sagenano.eval.benchmarks import benchmarks_dir


def benchmark_lines(name: str, count: int) -> list[str]:
    try:
        path = benchmarks_dir() / name
    except FileNotFoundError:
        pytest.skip("benchmark files not found: set SAGENANO_BENCHMARKS to shared/data/benchmarks")
    with path.open(encoding="utf-8") as handle:
        return [next(handle).strip() for _ in range(count)]


def gsm8k_sample(path: Path, count: int, extra: list[str] = ()) -> Path:
    """The first `count` lines of GSM8K's train split (and `extra` lines after them) as a file."""
    path.write_text("\n".join([*benchmark_lines("gsm8k/train.jsonl", count), *extra]) + "\n", encoding="utf-8")
    return path


def test_each_shape_is_read_and_each_bad_line_is_reported_with_its_number(tmp_path):
    gsm8k = benchmark_lines("gsm8k/train.jsonl", 2)
    aqua = benchmark_lines("aqua_rat/dev.json", 1)
    plain = json.dumps({"question": "Tom has 3 apples and buys 4. How many?", "steps": ["3 + 4 = 7"], "answer": 7})
    bad = ["{not json", json.dumps({"question": "No steps here"}), json.dumps({"question": " ", "steps": ["1"],
           "answer": "1"}), "[1, 2]", json.dumps({"question": "q", "steps": "one step", "answer": "1"})]  # fmt: skip
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join([*gsm8k, bad[0], *aqua, bad[1], "", plain, *bad[2:]]) + "\n", encoding="utf-8")
    with path.open("ab") as handle:
        handle.write(b'{"question": "caf\xe9", "steps": ["1"], "answer": "1"}\n')  # Latin-1, not UTF-8
    read = read_cot_file(path)
    first, _, aqua_item, plain_item = read.items
    assert first["steps"] == ["Natalia sold 48/2 = 24 clips in May.",
                              "Natalia sold 48+24 = 72 clips altogether in April and May."]  # fmt: skip
    assert first["answer"] == "72" and first["task"] == "own:mine"
    assert aqua_item["answer"] == json.loads(aqua[0])["correct"] and "\nA) " in aqua_item["question"]
    assert len(aqua_item["steps"]) == len([x for x in json.loads(aqua[0])["rationale"].splitlines() if x.strip()])
    assert (plain_item["steps"], plain_item["answer"]) == (["3 + 4 = 7"], "7")
    assert all(ReasoningItem.from_dict(item).question for item in read.items), "items have the training fields"
    assert [line.split(": ", 1)[0] for line in read.skipped] == [f"{path}:{n}" for n in (3, 5, 8, 9, 10, 11)]
    reasons = " | ".join(read.skipped)
    for words in ("not JSON", "fits none of the shapes", "question is empty", "JSON object is expected",
                  "must be a list", "not UTF-8"):  # fmt: skip
        assert words in reasons


def test_a_file_with_no_usable_line_or_none_at_all_is_an_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "no question"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"no usable chain-of-thought record .*bad.jsonl:1"):
        read_cot_file(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_cot_file(tmp_path / "missing.jsonl")
