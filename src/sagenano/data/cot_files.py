"""Chain-of-thought training data from a user's own JSONL files, in the shapes people have.

Each line is one record, recognised by its fields:
- GSM8K: `question`, and `answer` with the reasoning, one step per line, then `#### <number>` (calculator
  annotations `<<a*b=c>>` are dropped);
- AQuA-RAT: `question`, `options` (`"A)21"`, ...), `rationale` (one step per line) and `correct` (a letter); the
  options follow the question as the benchmark evaluation writes them;
- plain: `question`, `steps` (a list of strings) and `answer`.

A line that is not JSON, or fits none of the shapes, or has an empty question, step or answer, is skipped and
reported with its line number (never silently); a file with no usable line is an error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .format import with_options

SHAPES = {
    "gsm8k": "{question, answer: steps then '#### number'}",
    "aqua_rat": "{question, options, rationale, correct}",
    "plain": "{question, steps: [...], answer}",
}


@dataclass
class CotFile:
    """The usable items of one file and the lines skipped ("path:line: why")."""

    path: Path
    items: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def read_cot_file(path: str | Path) -> CotFile:
    """The file's records as training items (the fields `ReasoningItem` has; task `own:<file name>`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"chain-of-thought file {path} does not exist (paths are relative to the directory you run from)"
        )
    result = CotFile(path)
    with path.open("rb") as handle:  # line by line, so that one line of bad bytes is one skipped line
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                result.items.append(_item(record, f"own:{path.stem}", f"{path.stem}-{number:07d}"))
            except (ValueError, TypeError, KeyError, AttributeError) as error:  # JSON and UTF-8 errors included
                result.skipped.append(f"{path}:{number}: {_reason(error)}")
    if not result.items:
        raise ValueError(
            f"{path} has no usable chain-of-thought record ({len(result.skipped)} bad lines; the first: "
            f"{result.skipped[0] if result.skipped else 'the file is empty'}). Each line must be one JSON object "
            f"shaped like one of: " + "; ".join(f"{name} {shape}" for name, shape in SHAPES.items())
        )
    return result


def _reason(error: Exception) -> str:
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (byte {error.start + 1})"
    if isinstance(error, json.JSONDecodeError):
        return f"not JSON ({error.msg} at column {error.colno})"
    if isinstance(error, KeyError):
        return f"the field {error.args[0]!r} is missing"
    return str(error)


def _item(record: dict, task: str, item_id: str) -> dict:
    if not isinstance(record, dict):
        raise ValueError(f"a JSON object is expected, not {type(record).__name__}")
    question, steps, answer = _parts(record)
    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question is empty")
    if not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        raise ValueError("a step is empty, or there are none")
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError("the answer is empty")
    steps = [s.strip() for s in steps]
    return {"id": item_id, "task": task, "split": "train", "question": question.strip(), "steps": steps,
            "answer": answer.strip(), "dependencies": [[] for _ in steps], "distractors": [], "meta": {}}  # fmt: skip


def _parts(record: dict) -> tuple[object, list, object]:
    """(question, steps, answer) by the record's shape (`SHAPES`)."""
    if "steps" in record:
        steps = record["steps"]
        if not isinstance(steps, list):
            raise ValueError("`steps` must be a list of strings")
        return record.get("question"), steps, _text(record.get("answer"))
    if {"options", "rationale", "correct"} <= set(record):
        stem, labels, choices, correct, rationale = aqua_parts(record)
        return with_options(stem, labels, choices), _lines(rationale), correct
    if isinstance(record.get("answer"), str) and "####" in record["answer"]:
        question, rationale, final = gsm8k_parts(record)
        return question, _lines(rationale), final.strip()
    raise ValueError("fits none of the shapes: " + "; ".join(f"{name} {shape}" for name, shape in SHAPES.items()))


def gsm8k_parts(record: dict) -> tuple[str, str, str]:
    """A GSM8K record's question, its reasoning without the calculator annotations <<a*b=c>>, and the text after
    "####" (the final answer)."""
    reasoning, _, final = record["answer"].rpartition("####")
    return record["question"].strip(), re.sub(r"<<[^<>]*>>", "", reasoning).strip(), final


def aqua_parts(record: dict) -> tuple[str, tuple[str, ...], tuple[str, ...], str, str | None]:
    """An AQuA-RAT record's question stem, option labels and texts ("A)21"), correct letter and rationale."""
    parsed = [re.match(r"\s*([A-E])\s*\)\s*(.*)", option, re.DOTALL) for option in record["options"]]
    if not all(parsed):
        raise ValueError("options must be written 'A)text'")
    labels = tuple(match.group(1) for match in parsed)
    choices = tuple(match.group(2).strip() for match in parsed)
    return record["question"], labels, choices, record["correct"].strip().upper(), record.get("rationale")


def _text(value: object) -> object:
    """An answer given as a number reads as its text."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _lines(text: str | None) -> list[str]:
    return [line for line in (text or "").splitlines() if line.strip()]
