"""The benchmark registry: every loader on its real file, canonical gold answers, and answer extraction measured on
real gold answers and worked solutions."""

from __future__ import annotations

import json
from functools import cache

import pytest

from conftest import BENCHMARK_DATA, needs_benchmarks
from sagenano.eval import (
    BenchItem,
    UnknownTaskError,
    benchmarks_dir,
    get_task,
    load_items,
    shot_items,
    task_names,
)
from sagenano.eval.extract import (
    TRUTH_VALUES,
    YES_NO,
    canonical_number,
    extract_choice,
    extract_math,
    extract_number,
    extract_truth,
    extract_yesno,
    last_boxed,
    math_equal,
    normalize_math,
)

FILE_TASKS = [name for name in task_names() if get_task(name).default_file]
SYNTHETIC_TASKS = [name for name in task_names() if get_task(name).synthetic_task]
CHOICE_TASKS = ["aqua_rat", "logiqa", "commonsenseqa", "arc_easy", "arc_challenge", "synth_multiple_choice"]


@cache
def items_of(name: str) -> list[BenchItem]:
    return load_items(name)


def raw_records(relative: str) -> list[dict]:
    text = (BENCHMARK_DATA / relative).read_text(encoding="utf-8")
    return json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines()]


def share(hits: list[bool]) -> float:
    return sum(hits) / len(hits)


# ---- registry --------------------------------------------------------------------------------------------


def test_registry_names():
    assert task_names() == [
        "gsm8k", "aqua_rat", "math", "math500", "logiqa", "reclor", "proofwriter", "commonsenseqa", "strategyqa",
        "arc_easy", "arc_challenge", "synth_arithmetic", "synth_linear_equation", "synth_multiple_choice",
        "synth_logic",
    ]  # fmt: skip


def test_unknown_task_lists_every_name():
    with pytest.raises(UnknownTaskError) as error:
        get_task("nope")
    assert isinstance(error.value, ValueError)
    assert all(name in str(error.value) for name in task_names())
    with pytest.raises(UnknownTaskError):
        load_items("nope")


def test_benchmarks_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGENANO_BENCHMARKS", str(tmp_path))
    assert benchmarks_dir() == tmp_path
    monkeypatch.setenv("SAGENANO_BENCHMARKS", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="SAGENANO_BENCHMARKS"):
        benchmarks_dir()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="source"):
        load_items("gsm8k", source="web")
    with pytest.raises(ValueError, match="limit"):
        load_items("gsm8k", limit=-1)
    with pytest.raises(ValueError, match="no hub copy"):
        load_items("commonsenseqa", source="hub")


# ---- loaders on the real files ---------------------------------------------------------------------------


def assert_canonical(name: str, item: BenchItem) -> None:
    kind = get_task(name).answer_kind
    assert item.gold and item.question, item
    if kind == "number":
        assert canonical_number(item.gold) == item.gold, item.gold
    elif kind == "choice":
        assert item.gold in item.labels and len(item.labels) == len(item.choices) >= 4, item
        assert all(item.choices) and len(set(item.labels)) == len(item.labels), item
    elif kind == "truth":
        assert item.gold in TRUTH_VALUES
    elif kind == "yesno":
        assert item.gold in YES_NO
    else:
        assert normalize_math(item.gold) == item.gold, item.gold


@needs_benchmarks
@pytest.mark.parametrize("name", FILE_TASKS)
def test_loader_reads_its_real_file(name):
    items = items_of(name)
    assert len(items) == get_task(name).expected_count
    assert len({item.id for item in items}) == len(items)
    for item in items:
        assert item.task == name
        assert_canonical(name, item)
        if item.labels:  # lettered options are shown as the question's last lines
            assert item.question.endswith(
                "\n".join(f"{lab}) {text}" for lab, text in zip(item.labels, item.choices, strict=True))
            )


@needs_benchmarks
@pytest.mark.parametrize("name", FILE_TASKS)
def test_gold_round_trips_through_extract(name):
    task = get_task(name)
    for item in items_of(name):
        shown = f"\\boxed{{{item.gold}}}" if task.answer_kind == "math" else item.gold
        assert task.extract(shown, item) == item.gold
        assert task.is_correct(item.gold, item.gold)


@needs_benchmarks
def test_choice_items_match_their_files():
    for item, record in zip(items_of("commonsenseqa"), raw_records("commonsenseqa/dev_rand_split.jsonl"), strict=True):
        assert item.id == record["id"] and item.gold == record["answerKey"]
        assert item.choices == tuple(c["text"] for c in record["question"]["choices"])
    for name in ("arc_easy", "arc_challenge"):
        for item, record in zip(items_of(name), raw_records(f"arc/{name}_test.jsonl"), strict=True):
            assert item.labels == ("A", "B", "C", "D") and item.choices == tuple(record["choices"])
            assert item.gold == "ABCD"[record["gold"]] and not item.question.startswith("Question:")
    for item, record in zip(items_of("aqua_rat"), raw_records("aqua_rat/test.json"), strict=True):
        assert item.labels == tuple("ABCDE") and item.gold == record["correct"]
        assert item.choices == tuple(option.split(")", 1)[1].strip() for option in record["options"])
    letters = (BENCHMARK_DATA / "logiqa/Test.txt").read_text(encoding="utf-8").split("\n")[1::8]
    assert [item.gold for item in items_of("logiqa")] == [letter.upper() for letter in letters]
    assert all(item.labels == ("A", "B", "C", "D") for item in items_of("logiqa"))


@needs_benchmarks
def test_truth_and_yesno_golds_match_their_files():
    verdicts = {"A": "True", "B": "False", "C": "Unknown"}
    for item, record in zip(items_of("proofwriter"), raw_records("proofwriter/test.json"), strict=True):
        assert item.id == record["id"] and item.gold == verdicts[record["answer"]]
        assert item.question.startswith(record["context"]) and item.choices == TRUTH_VALUES
    for item, record in zip(items_of("strategyqa"), raw_records("strategyqa/dev.json"), strict=True):
        assert item.id == record["qid"] and item.gold == ("yes" if record["answer"] else "no")


def test_limit_keeps_the_first_items():
    if BENCHMARK_DATA is not None:
        assert [item.id for item in load_items("gsm8k", limit=5)] == [f"gsm8k-{i}" for i in range(5)]
    assert len(load_items("synth_arithmetic", limit=5)) == 5


@pytest.mark.parametrize("name", SYNTHETIC_TASKS)
def test_synthetic_tasks_load_deterministically(name):
    first, again = load_items(name, limit=20), load_items(name, limit=20)
    assert first == again and len({item.id for item in first}) == 20
    for item in first:
        assert_canonical(name, item)
        assert get_task(name).extract(item.gold, item) == item.gold
    assert len(load_items(name)) == 300  # the default held-out set


# ---- reclor: a user-supplied file ------------------------------------------------------------------------

RECLOR_RECORDS = [
    {"context": f"Context {i}: every pilot is trained.", "question": "Which one can be inferred?",
     "answers": ["Some pilots fly.", "No pilot is trained.", "Pilots are trained.", "Nothing follows."],
     "label": i % 4, "id_string": f"train_{i}"}
    for i in range(32)
]  # fmt: skip


def test_reclor_loads_a_user_file(tmp_path):
    path = tmp_path / "val.json"
    path.write_text(json.dumps(RECLOR_RECORDS), encoding="utf-8")
    items = load_items("reclor", path)
    assert [item.id for item in items] == [f"train_{i}" for i in range(32)]
    assert [item.gold for item in items] == ["ABCD"[i % 4] for i in range(32)]
    assert items[0].choices[2] == "Pilots are trained." and items[0].question.endswith("D) Nothing follows.")
    assert load_items("reclor", path, limit=5) == items[:5]
    task = get_task("reclor")
    for item in items:  # 32 gold letters in model phrasings
        assert task.extract(f"Context says so; the answer is ({item.gold}).", item) == item.gold
        assert task.extract(f"Answer: {item.gold.lower()}", item) == item.gold
    shots, excluded = shot_items("reclor", 2, path)
    assert [item.id for item in shots] == ["train_30", "train_31"] and excluded == {"train_30", "train_31"}


def test_reclor_without_a_path_says_to_supply_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"ReClor.*path="):
        load_items("reclor")
    unlabeled = [{**RECLOR_RECORDS[0], "label": None}]
    (tmp_path / "test.json").write_text(json.dumps(unlabeled), encoding="utf-8")
    with pytest.raises(ValueError, match="label"):
        load_items("reclor", tmp_path / "test.json")


# ---- k-shot exemplars ------------------------------------------------------------------------------------


@needs_benchmarks
def test_shots_come_from_the_dev_split_or_the_end_of_the_eval_file():
    shots, excluded = shot_items("gsm8k", 3)
    assert [s.id for s in shots] == ["gsm8k-shots-0", "gsm8k-shots-1", "gsm8k-shots-2"] and excluded == set()
    assert shots[0].rationale and "####" not in shots[0].rationale and "<<" not in shots[0].rationale
    proof_shots, proof_excluded = shot_items("proofwriter", 2)
    assert proof_excluded == set() and not {s.id for s in proof_shots} & {i.id for i in items_of("proofwriter")}
    arc_shots, arc_excluded = shot_items("arc_easy", 4)
    assert arc_shots == items_of("arc_easy")[-4:] and arc_excluded == {s.id for s in arc_shots}
    synth_shots, synth_excluded = shot_items("synth_arithmetic", 2)
    assert synth_excluded == set() and all("-train-" in s.id for s in synth_shots)
    assert shot_items("gsm8k", 0) == ([], set())


# ---- extraction from real worked solutions ---------------------------------------------------------------


@needs_benchmarks
def test_number_extraction_from_gsm8k_solutions():
    task, items = get_task("gsm8k"), items_of("gsm8k")
    solutions = [record["answer"] for record in raw_records("gsm8k/test.jsonl")]
    marked = [task.extract(text, item) == item.gold for text, item in zip(solutions, items, strict=True)]
    assert all(marked[:30]) and share(marked) == 1.0, f"'#### N' read in {share(marked):.3f} of solutions"
    # Without the "#### N" line only the last-number fallback is left; measured 1282/1319 = 0.972.
    bare = [
        task.extract(text.rpartition("####")[0], item) == item.gold for text, item in zip(solutions, items, strict=True)
    ]
    assert share(bare) >= 0.95, f"last number is the gold in {share(bare):.3f} of solutions"


@needs_benchmarks
def test_choice_extraction_from_aqua_rationales():
    task, items = get_task("aqua_rat"), items_of("aqua_rat")
    hits = [task.extract(item.rationale, item) == item.gold for item in items]
    # Measured 247/254 = 0.972; 4 of the misses name no letter at all, one says "ANSWER: 3".
    assert share(hits[:30]) >= 0.95 and share(hits) >= 0.95, f"aqua rationales: {share(hits):.3f}"


@needs_benchmarks
def test_math_extraction_from_solutions():
    task, items = get_task("math500"), items_of("math500")
    hits = [task.is_correct(task.extract(item.rationale, item), item.gold) for item in items]
    assert share(hits) == 1.0, f"math500 solution boxed == answer field in {share(hits):.3f}"
    math_gold = {item.question: item.gold for item in items_of("math")}  # gold = last \boxed of the solution
    shared = [item for item in items if item.question in math_gold]
    agree = [math_equal(math_gold[item.question], item.gold) for item in shared]
    assert len(shared) == 500 and share(agree) == 1.0, f"MATH boxed gold == MATH-500 answer in {share(agree):.3f}"


@pytest.mark.parametrize("name", ["synth_arithmetic", "synth_linear_equation", "synth_multiple_choice"])
def test_extraction_from_synthetic_solution_steps(name):
    task, items = get_task(name), load_items(name, limit=100)
    hits = [task.extract(item.rationale, item) == item.gold for item in items]
    assert share(hits) == 1.0, f"{name}: {share(hits):.3f}"


# ---- extraction from real gold answers in model phrasings ------------------------------------------------


def choice_phrasings(item: BenchItem) -> list[str]:
    other = next(label for label in item.labels if label != item.gold)
    gold = item.gold
    return [
        f"Let's think step by step. Option {other} ignores the premise, so the answer is ({gold}).",
        f"Answer: {gold.lower()}",
        f"The correct option is {gold}.",
        f"({other}) is tempting.\n\n{gold}",
        f"I pick ({gold}) {item.choices[item.labels.index(gold)]}.",
        f"{gold} is the correct answer.",
        f"<|question|>{item.question}<|step|>({other}) fails here.<|answer|>{gold}<|endoftext|>",
    ]


@needs_benchmarks
@pytest.mark.parametrize("name", CHOICE_TASKS)
def test_choice_extraction_from_phrased_golds(name):
    task = get_task(name)
    items = items_of(name)[:40]
    for item in items:
        for text in choice_phrasings(item):
            assert task.extract(text, item) == item.gold, text
    assert len({item.gold for item in items}) >= 4


@needs_benchmarks
def test_choice_extraction_by_option_text():
    task, items = get_task("commonsenseqa"), items_of("commonsenseqa")[:200]
    hits = [task.extract(f"So the answer is {item.choices[item.labels.index(item.gold)]}.", item) == item.gold
            for item in items]  # fmt: skip
    # Measured 198/200 (1215/1221 in all): the misses list the same option text twice, which is ambiguous (None).
    assert share(hits) >= 0.95, f"option text recovered in {share(hits):.3f}"


def truth_phrasings(gold: str) -> list[str]:
    common = [f"Therefore, the statement is {gold}.", f"The answer is {gold.lower()}", f"Answer: {gold.upper()}"]
    by_gold = {
        "True": ["The bear visits the lion, so it is true that the bear visits the lion."],
        "False": ["The rules force the opposite, so the statement is not true."],
        "Unknown": ["Nothing fixes it either way; the truth value cannot be determined.", "It is uncertain."],
    }
    return common + by_gold[gold]


@pytest.mark.parametrize("name", ["proofwriter", "synth_logic"])
def test_truth_extraction_from_phrased_golds(name):
    if name == "proofwriter" and BENCHMARK_DATA is None:
        pytest.skip("benchmark files not found: set SAGENANO_BENCHMARKS to shared/data/benchmarks")
    task = get_task(name)
    items = items_of(name)[:60]
    assert set(item.gold for item in items) == set(TRUTH_VALUES)
    for item in items:
        for text in truth_phrasings(item.gold):
            assert task.extract(text, item) == item.gold, text


@needs_benchmarks
def test_yesno_extraction_from_phrased_golds():
    task = get_task("strategyqa")
    items = items_of("strategyqa")[:40]
    for item in items:
        as_bool = "true" if item.gold == "yes" else "false"
        phrasings = [
            f"The answer is {item.gold}.",
            f"{item.gold.capitalize()}, because there is no record of it.",
            f"So the answer is: {as_bool}",
            f"<|step|>Maybe no.<|answer|>{item.gold}<|endoftext|>",
        ]
        for text in phrasings:
            assert task.extract(text, item) == item.gold, text


# ---- hard cases and negatives ----------------------------------------------------------------------------


def test_number_extraction_hard_cases():
    assert extract_number("In 2019 she had 3 boxes of 12 pens. The answer is $1,234.50.") == "1234.5"
    assert extract_number("To answer this, 16 - 3 = 13 eggs; she sells them all.") == "13"
    assert extract_number("The answer is 7 apples, not 9.") == "7"
    assert extract_number("So she pays \\boxed{\\$1,000} in total, or 20 a week.") == "1000"
    assert extract_number("x = -3.5") == "-3.5" and extract_number("5.00 dollars.") == "5"
    assert extract_number("The answer is 6/8.") == "3/4"
    assert extract_number("I cannot solve this.") is None
    assert get_task("gsm8k").is_correct("0.75", "3/4") and not get_task("gsm8k").is_correct(None, "3")
    sage_output = get_task("gsm8k").extract  # Task.extract reads after <|answer|> first
    assert sage_output("<|step|>2 + 3 = 5<|step|>5 * 4 = 20<|answer|>20<|endoftext|> 99") == "20"
    assert sage_output("<|step|>2 + 3 = 5<|answer|>unsure<|endoftext|>") == "5"  # falls back to the whole text


def test_choice_extraction_hard_cases():
    labels, choices = tuple("ABCDE"), ("bank", "library", "department store", "mall", "new york")
    assert extract_choice("A bank is where the door is. The answer is (D).", labels, choices) == "D"
    assert extract_choice("the answer is a bank", labels, choices) == "A"  # "a" is an article, "bank" option A
    assert extract_choice("Let me think about it.", labels, choices) is None
    assert extract_choice("The answer is (F).", labels) is None
    assert extract_choice("answer: c", labels) == "C" and extract_choice("D is the answer", labels) == "D"


def test_truth_and_yesno_hard_cases():
    assert extract_truth("It is true that the bear is big, but the statement is not true.") == "False"
    assert extract_truth("The answer is unknown, not true.") == "Unknown"  # the verdict after the marker wins
    assert extract_truth("The bear is big and round.") is None
    assert extract_yesno("No. Plants need light, so yes is wrong here; answer: no") == "no"
    assert extract_yesno("I am not sure about this one.") is None


def test_math_extraction_hard_cases():
    assert extract_math("so $x = \\boxed{\\frac{1}{\\sqrt{2}}}$.") == "\\frac{1}{\\sqrt{2}}"
    assert extract_math("First \\boxed{3}, then \\fbox{\\dfrac{9}{7}}.") == "\\frac{9}{7}"
    assert last_boxed("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}") == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert math_equal("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})")
    assert math_equal("0.5", "\\frac12") and math_equal("\\tfrac{3}{4}.", "3/4") and math_equal("-0.5", "-\\frac12")
    assert math_equal("10\\text{ cm}", "10") and math_equal("90^\\circ", "90") and math_equal("\\$5.00", "5")
    assert math_equal("x = 5", "5") and math_equal("1,000", "1000") and not math_equal("\\frac{1}{3}", "0.33")
    assert extract_math("The answer is $\\frac{2}{3}$.") == "\\frac{2}{3}"
    assert extract_math("No idea.") is None
