"""The benchmark registry: each task's data file, answer kind and reader, and loaders that give `BenchItem`s.

Files live in `benchmarks_dir()` (see its README for formats and sources). Every task is data (`Task`) plus two
named hooks: `read_records` (file -> raw records) and `to_item` (raw record -> `BenchItem`), so a Hugging Face copy
with the same fields reuses `to_item` unchanged.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import generate_items
from ..data.cot_files import aqua_parts, gsm8k_parts
from ..data.format import with_options
from ..data.schema import ReasoningItem
from .extract import (
    TRUTH_VALUES,
    YES_NO,
    answers_match,
    canonical_number,
    canonical_yesno,
    extract_answer,
    last_boxed,
    normalize_math,
)
from .task_accuracy import EVAL_SEED

BENCHMARKS_ENV = "SAGENANO_BENCHMARKS"
SYNTHETIC_DEFAULT_N = 300
SOURCES: tuple[str, ...] = ("file", "hub")


@dataclass(frozen=True)
class BenchItem:
    """One benchmark question with its canonical gold answer."""

    task: str
    id: str  # stable id: the file's id, or "<task>-<index>" (index in the file, 0-based)
    question: str  # the problem as shown to a model; for multiple choice the options follow as lines "A) text"
    gold: str  # canonical gold answer, in the form `Task.extract` returns
    labels: tuple[str, ...] = ()  # option labels when the options are lettered in the question, e.g. ("A", ..., "E")
    choices: tuple[str, ...] = ()  # option texts without labels; for truth / yes-no tasks the possible answers
    rationale: str | None = None  # worked solution for k-shot exemplars (gsm8k: before "####"; strategyqa: facts)


Record = dict[str, Any]
RecordReader = Callable[[Path], list[Record]]  # a data file -> its raw records, in file order
ItemBuilder = Callable[[str, Record, str], BenchItem]  # (task name, record, fallback id) -> item


class UnknownTaskError(ValueError):
    """A benchmark name that is not in the registry."""


@dataclass(frozen=True)
class Task:
    """A benchmark: where its items are, how answers look, and how to read and score them."""

    name: str
    description: str
    answer_kind: str  # "number" | "choice" | "truth" (True/False/Unknown) | "yesno" | "math" (LaTeX)
    default_file: str | None  # relative to benchmarks_dir(); None for reclor (user file) and synthetic tasks
    shots_file: str | None = None  # split for k-shot exemplars; None: the eval file's last k items (shot_items)
    expected_count: int | None = None  # items in default_file (the data README's table)
    hf_id: str | None = None  # "dataset[:config]" on the Hugging Face hub whose rows have this file's fields
    labels: tuple[str, ...] = ()  # option labels that `extract` assumes when it is given no item
    hf_split: str = "test"
    synthetic_task: str | None = None  # the sagenano.data task whose held-out items this benchmark generates
    read_records: RecordReader | None = field(default=None, repr=False, compare=False)  # None: JSON / JSON Lines
    to_item: ItemBuilder | None = field(default=None, repr=False, compare=False)

    def extract(self, text: str, item: BenchItem | None = None) -> str | None:
        """The answer in a model's output, canonicalised like `BenchItem.gold`, or None.

        Args:
            text: Model output; SAGE output is read after `<|answer|>` first.
            item: The item answered. Multiple choice reads its `labels` (else `Task.labels`) and its `choices`
                (to recognise an answer given as an option's text).
        """
        labels = item.labels if item is not None and item.labels else self.labels
        choices = item.choices if item is not None else ()
        return extract_answer(self.answer_kind, text, labels, choices)

    def is_correct(self, predicted: str | None, gold: str) -> bool:
        """Whether `predicted` (from `extract`) is the gold answer; numbers and math compare by value where cheap."""
        return answers_match(self.answer_kind, predicted, gold)


# ---- file formats ----------------------------------------------------------------------------------------


def read_json_records(path: Path) -> list[Record]:
    """A JSON list, or JSON Lines (AQuA's ".json" files are JSON Lines)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_logiqa_records(path: Path) -> list[Record]:
    """LogiQA's plain text: per item a blank line, the answer letter, the context, the question, 4 option lines."""
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for start in range(0, len(lines) - 7, 8):
        block = lines[start : start + 8]
        if block[0].strip() or block[1].strip().lower() not in ("a", "b", "c", "d"):
            raise ValueError(f"{path}: line {start + 1} does not start a LogiQA item (blank line, answer letter).")
        records.append(
            {"label": block[1].strip().lower(), "context": block[2], "question": block[3], "options": block[4:8]}
        )
    return records


def _letters(n: int) -> tuple[str, ...]:
    return tuple("ABCDEFGHIJ"[:n])


# ---- record -> item, one per data set --------------------------------------------------------------------


def gsm8k_item(task: str, record: Record, fallback_id: str) -> BenchItem:
    """GSM8K: the final number follows "#### " (`data.cot_files.gsm8k_parts`)."""
    question, rationale, final = gsm8k_parts(record)
    gold = canonical_number(final)
    _require(rationale and gold, task, fallback_id, "a number after '####' in `answer`")
    return BenchItem(task, fallback_id, question, gold, rationale=rationale)


def aqua_item(task: str, record: Record, fallback_id: str) -> BenchItem:
    """AQuA-RAT: options "A)21" (label, then text), `correct` a letter (`data.cot_files.aqua_parts`)."""
    try:
        stem, labels, choices, correct, rationale = aqua_parts(record)
    except ValueError:
        raise ValueError(f"{task} item {fallback_id!r} is malformed: expected options written 'A)text'.") from None
    return BenchItem(task, fallback_id, with_options(stem, labels, choices), correct, labels, choices, rationale)


def _logiqa_options(lines: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Labels and texts of LogiQA's option lines: "A.text", "A text" or "A?text"; some items list A, C, B, D."""
    parsed = [re.match(r"([A-D])[.?\s]\s*(.*)", line.strip()) for line in lines]
    if sorted(match.group(1) if match else "" for match in parsed) == list("ABCD"):
        options = sorted((match.group(1), match.group(2).strip()) for match in parsed)
    else:  # a garbled line ("Storehouse B.3"): the lines are A-D in order; strip only the expected letter
        options = [
            (label, (match.group(2) if match and match.group(1) == label else line).strip())
            for label, match, line in zip(_letters(4), parsed, lines, strict=True)
        ]
    return tuple(label for label, _ in options), tuple(text for _, text in options)


def logiqa_item(task: str, record: Record, fallback_id: str) -> BenchItem:
    """LogiQA (from `read_logiqa_records`): context + question, 4 options, answer letter a-d."""
    labels, choices = _logiqa_options(record["options"])
    question = with_options(f"{record['context'].strip()}\n{record['question'].strip()}", labels, choices)
    return BenchItem(task, fallback_id, question, record["label"].upper(), labels, choices)


def reclor_item(task: str, record: Record, fallback_id: str) -> BenchItem:
    """ReClor: `context`, `question`, `answers` (4 texts), `label` (0-3), `id_string`."""
    item_id, label = record.get("id_string", fallback_id), record.get("label")
    labeled = isinstance(label, int) and 0 <= label < len(record["answers"])
    _require(labeled, task, item_id, "an integer `label` indexing `answers` (ReClor's test split has no labels)")
    choices = tuple(answer.strip() for answer in record["answers"])
    labels = _letters(len(choices))
    question = with_options(f"{record['context'].strip()}\n{record['question'].strip()}", labels, choices)
    return BenchItem(task, item_id, question, labels[label], labels, choices)


def proofwriter_item(task: str, record: Record, fallback_id: str) -> BenchItem:
    """ProofWriter (Logic-LM subset): the options "A) True" / "B) False" / "C) Unknown" name the gold verdict.

    The question is the context and the question; it already asks for "true, false, or unknown", so the
    lettered options are not shown and the answer is the verdict itself."""
    options = [re.match(r"\s*([A-C])\)\s*(\w+)", option) for option in record["options"]]
    verdict_of = {match.group(1): match.group(2) for match in options if match}
    gold = verdict_of.get(record["answer"].strip())
    _require(gold in TRUTH_VALUES, task, record["id"], "`answer` naming an option True, False or Unknown")
    question = f"{record['context'].strip()}\n{record['question'].strip()}"
    return BenchItem(task, record["id"], question, gold, choices=TRUTH_VALUES)


def commonsenseqa_item(task: str, record: Record, fallback_id: str) -> BenchItem:
    """CommonsenseQA: `question.stem`, `question.choices` [{label, text}] x5, `answerKey`."""
    options = record["question"]["choices"]
    labels = tuple(option["label"].strip().upper() for option in options)
    choices = tuple(option["text"].strip() for option in options)
    question = with_options(record["question"]["stem"], labels, choices)
    return BenchItem(task, record["id"], question, record["answerKey"].strip().upper(), labels, choices)


def strategyqa_item(task: str, record: Record, fallback_id: str) -> BenchItem:
    """StrategyQA: a yes/no question, `answer` a bool; its `facts` make the rationale."""
    gold = canonical_yesno(record["answer"])
    rationale = " ".join(record.get("facts") or []) or None
    return BenchItem(task, record["qid"], record["question"].strip(), gold, choices=YES_NO, rationale=rationale)


def arc_item(task: str, record: Record, fallback_id: str) -> BenchItem:
    """ARC (MosaicML format): `query` "Question: ...", 4 `choices`, `gold` a 0-based index -> letter A-D."""
    choices = tuple(choice.strip() for choice in record["choices"])
    labels = _letters(len(choices))
    stem = record["query"].removeprefix("Question: ")
    return BenchItem(task, fallback_id, with_options(stem, labels, choices), labels[record["gold"]], labels, choices)


def math_item(task: str, record: Record, fallback_id: str) -> BenchItem:
    """MATH: the gold is the last \\boxed{} of the `solution`, normalised; the id is "math-<idx>"."""
    boxed = last_boxed(record["solution"])
    item_id = f"{task}-{record['idx']}" if "idx" in record else fallback_id
    _require(boxed, task, item_id, "a \\boxed{} answer in `solution`")
    return BenchItem(task, item_id, record["problem"].strip(), normalize_math(boxed), rationale=record["solution"])


def math500_item(task: str, record: Record, fallback_id: str) -> BenchItem:
    """MATH-500: the gold is the `answer` field, normalised; the id is `unique_id` ("test/precalculus/807.json")."""
    item_id = record.get("unique_id", fallback_id)
    _require(str(record.get("answer", "")).strip(), task, item_id, "a non-empty `answer`")
    return BenchItem(
        task, item_id, record["problem"].strip(), normalize_math(record["answer"]), rationale=record["solution"]
    )


def _require(ok: object, task: str, item_id: str, what: str) -> None:
    if not ok:
        raise ValueError(f"{task} item {item_id!r} is malformed: expected {what}.")


def synthetic_item(name: str, kind: str, item: ReasoningItem) -> BenchItem:
    """A generated item as a benchmark item: the question verbatim (multiple choice already lists its options
    inline, as the model was trained on), the gold canonicalised, the steps as rationale."""
    gold = canonical_number(item.answer) if kind == "number" else item.answer
    labels: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    if kind == "choice":
        labels = tuple(item.meta["options"])
        choices = tuple(item.meta["options"][label] for label in labels)
    elif kind == "truth":
        choices = TRUTH_VALUES if item.meta.get("world") == "open" else TRUTH_VALUES[:2]
    _require(gold, name, item.id, "an answer")
    return BenchItem(name, item.id, item.question, gold, labels, choices, "\n".join(item.steps))


# ---- the registry ----------------------------------------------------------------------------------------


def _synthetic_task(name: str, kind: str, labels: tuple[str, ...] = ()) -> Task:
    task = name.removeprefix("synth_")
    description = f"held-out synthetic {task.replace('_', ' ')} items with ground truth (seed {EVAL_SEED})"
    return Task(name, description, kind, None, labels=labels, synthetic_task=task)


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            "gsm8k",
            "grade-school math word problems",
            "number",
            "gsm8k/test.jsonl",
            shots_file="gsm8k/train.jsonl",
            expected_count=1319,
            hf_id="openai/gsm8k:main",
            to_item=gsm8k_item,
        ),
        Task(
            "aqua_rat",
            "algebra word problems, 5 options",
            "choice",
            "aqua_rat/test.json",
            shots_file="aqua_rat/dev.json",
            expected_count=254,
            hf_id="deepmind/aqua_rat:raw",
            labels=_letters(5),
            to_item=aqua_item,
        ),
        Task(
            "math",
            "MATH competition problems (full test set)",
            "math",
            "math/test.jsonl",
            expected_count=5000,
            to_item=math_item,
        ),
        Task(
            "math500",
            "MATH-500 (PRM800K subset of the MATH test set)",
            "math",
            "math/math500_test.jsonl",
            expected_count=500,
            hf_id="HuggingFaceH4/MATH-500",
            to_item=math500_item,
        ),
        Task(
            "logiqa",
            "logical reasoning reading comprehension, 4 options",
            "choice",
            "logiqa/Test.txt",
            shots_file="logiqa/Eval.txt",
            expected_count=651,
            labels=_letters(4),
            read_records=read_logiqa_records,
            to_item=logiqa_item,
        ),
        Task(
            "reclor",
            "logical reasoning reading comprehension (user-supplied ReClor JSON)",
            "choice",
            None,
            labels=_letters(4),
            to_item=reclor_item,
        ),
        Task(
            "proofwriter",
            "deductive reasoning, depth 5, open world (Logic-LM subset)",
            "truth",
            "proofwriter/test.json",
            shots_file="proofwriter/dev.json",
            expected_count=600,
            to_item=proofwriter_item,
        ),
        Task(
            "commonsenseqa",
            "commonsense questions, 5 options (dev split)",
            "choice",
            "commonsenseqa/dev_rand_split.jsonl",
            expected_count=1221,
            labels=_letters(5),
            to_item=commonsenseqa_item,
        ),
        Task(
            "strategyqa",
            "yes/no questions needing implicit multi-hop reasoning",
            "yesno",
            "strategyqa/dev.json",
            expected_count=229,
            to_item=strategyqa_item,
        ),
        Task(
            "arc_easy",
            "grade-school science, 4 options (ARC-Easy test)",
            "choice",
            "arc/arc_easy_test.jsonl",
            expected_count=2376,
            labels=_letters(4),
            to_item=arc_item,
        ),
        Task(
            "arc_challenge",
            "grade-school science, 4 options (ARC-Challenge test)",
            "choice",
            "arc/arc_challenge_test.jsonl",
            expected_count=1172,
            labels=_letters(4),
            to_item=arc_item,
        ),
        _synthetic_task("synth_arithmetic", "number"),
        _synthetic_task("synth_linear_equation", "number"),
        _synthetic_task("synth_multiple_choice", "choice", _letters(5)),
        _synthetic_task("synth_logic", "truth"),
    )
}


def task_names() -> list[str]:
    """Every registered benchmark name, in registry order."""
    return list(TASKS)


def get_task(name: str) -> Task:
    """The task called `name`.

    Raises:
        UnknownTaskError: If no task has that name; the message lists the valid ones.
    """
    if name not in TASKS:
        raise UnknownTaskError(f"Unknown benchmark {name!r}: use one of {', '.join(TASKS)}.")
    return TASKS[name]


def benchmarks_dir() -> Path:
    """The folder of benchmark files: $SAGENANO_BENCHMARKS, else `<repo root>/../shared/data/benchmarks`.

    Raises:
        FileNotFoundError: If neither exists.
    """
    configured = os.environ.get(BENCHMARKS_ENV)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{BENCHMARKS_ENV}={configured!r} is not a directory.")
        return path
    repo_root = Path(__file__).resolve().parents[3]  # src/sagenano/eval/benchmarks.py -> the repository
    path = repo_root.parent / "shared" / "data" / "benchmarks"
    if not path.is_dir():
        raise FileNotFoundError(
            f"No benchmark folder at {path}: set {BENCHMARKS_ENV} to the folder of benchmark files, "
            "or pass the file's path."
        )
    return path


# ---- loading ---------------------------------------------------------------------------------------------


def read_task_file(task: Task, path: Path, id_prefix: str | None = None) -> list[BenchItem]:
    """Every item of one of `task`'s files; items without an id of their own get "<id_prefix>-<index>"."""
    if task.to_item is None:
        raise ValueError(f"Benchmark {task.name!r} is generated, not read from a file.")
    if not path.is_file():
        raise FileNotFoundError(f"No {task.name} file at {path}.")
    prefix = id_prefix or task.name
    return [
        task.to_item(task.name, record, f"{prefix}-{index}")
        for index, record in enumerate((task.read_records or read_json_records)(path))
    ]


def _eval_file(task: Task, path: Path | None) -> Path:
    if path is not None:
        return Path(path)
    if task.default_file is None:
        raise ValueError(
            f"Benchmark {task.name!r} ships no data (ReClor is distributed under a research-only agreement): pass "
            "path= to a file in the ReClor JSON format (a list of objects with context, question, answers, label, "
            "id_string)."
        )
    return benchmarks_dir() / task.default_file


def _synthetic_items(task: Task, n: int, split: str = "heldout") -> list[BenchItem]:
    assert task.synthetic_task is not None
    generated = generate_items(task.synthetic_task, n, EVAL_SEED, split)
    return [synthetic_item(task.name, task.answer_kind, item) for item in generated]


def _hub_items(task: Task) -> list[BenchItem]:
    """The task's Hugging Face copy, read with the file's `to_item` (needs `datasets` and the network)."""
    if task.hf_id is None or task.to_item is None:
        with_hub = [name for name, t in TASKS.items() if t.hf_id]
        raise ValueError(f"Benchmark {task.name!r} has no hub copy: use source='file' (hub: {', '.join(with_hub)}).")
    try:
        import datasets  # optional: only the hub source needs it
    except ImportError as error:
        raise RuntimeError("source='hub' needs the `datasets` package (pip install datasets).") from error
    dataset, _, config = task.hf_id.partition(":")
    try:
        rows = datasets.load_dataset(dataset, config or None, split=task.hf_split)
    except Exception as error:  # the hub's failures are many (offline, gated, renamed): report them all alike
        raise RuntimeError(
            f"Could not load {task.hf_id} ({task.hf_split}) from the Hugging Face hub: {error}. "
            f"Use source='file' with the files in {BENCHMARKS_ENV}."
        ) from error
    return [task.to_item(task.name, dict(row), f"{task.name}-{index}") for index, row in enumerate(rows)]


def load_items(name: str, path: Path | None = None, limit: int | None = None, source: str = "file") -> list[BenchItem]:
    """The evaluation items of benchmark `name`, in file order.

    Args:
        name: A registered benchmark (`task_names()`).
        path: A file to read instead of the default one (required for reclor); ignored by synthetic tasks.
        limit: Keep the first `limit` items. Synthetic tasks generate `limit` items (default 300).
        source: "file", or "hub" for the task's Hugging Face copy (`Task.hf_id`; needs `datasets` and a network).

    Raises:
        UnknownTaskError: If `name` is not registered.
        ValueError: If `source` or `limit` is invalid, or reclor is loaded without a path.
        FileNotFoundError: If the file is missing.
        RuntimeError: If the hub copy cannot be loaded.
    """
    task = get_task(name)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got limit={limit}.")
    if source not in SOURCES:
        raise ValueError(f"Unknown source {source!r}: use one of {', '.join(SOURCES)}.")
    if task.synthetic_task is not None:
        return _synthetic_items(task, SYNTHETIC_DEFAULT_N if limit is None else limit)
    items = _hub_items(task) if source == "hub" else read_task_file(task, _eval_file(task, path))
    return items if limit is None else items[:limit]


def shot_items(name: str, k: int, path: Path | None = None) -> tuple[list[BenchItem], set[str]]:
    """`k` exemplars for k-shot prompts, and the ids of eval items that must not be evaluated.

    Exemplars are the first `k` items of `Task.shots_file` (gsm8k train, aqua dev, logiqa Eval, proofwriter dev),
    with ids "<task>-shots-<index>" when the file has none; nothing is excluded then. Tasks without a shots file
    use the last `k` items of the eval file (`path`, else the default file) and return their ids, so the caller
    drops them from evaluation. Synthetic tasks draw exemplars from the train split (disjoint from held-out).

    Raises:
        ValueError: If `k` is negative or leaves no eval item.
    """
    task = get_task(name)
    if k < 0:
        raise ValueError(f"k must be >= 0, got k={k}.")
    if k == 0:
        return [], set()
    if task.synthetic_task is not None:
        return _synthetic_items(task, k, split="train"), set()
    if task.shots_file is not None:
        shots = read_task_file(task, benchmarks_dir() / task.shots_file, id_prefix=f"{name}-shots")
        return shots[:k], set()
    pool = load_items(name, path)
    if k >= len(pool):
        raise ValueError(f"k={k} exemplars from the {len(pool)} items of {name} would leave none to evaluate.")
    shots = pool[-k:]
    return shots, {item.id for item in shots}
