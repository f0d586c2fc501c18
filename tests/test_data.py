"""Tests of the synthetic reasoning tasks: determinism, checker agreement, corruption, spans, splits, I/O."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from sagenano.data import (
    TASKS,
    Dependency,
    ReasoningItem,
    check_item,
    generate_item,
    generate_items,
    is_heldout_quantity,
    iter_jsonl,
    parse_answer,
    prompt_text,
    read_jsonl,
    synth,
    training_text,
    write_jsonl,
)
from sagenano.data.logic import RULE_TEMPLATES
from sagenano.data.vocab import (
    HELDOUT_ATTRIBUTES,
    HELDOUT_NAMES,
    TRAIN_ATTRIBUTES,
    TRAIN_NAMES,
    WIDE_TRAIN_ATTRIBUTES,
)
from sagenano.tokenizer import SPECIAL_TOKENS, step_token_id

ALL_TASKS = list(TASKS)
WORD = re.compile(r"[A-Za-z]+")
NUMBER = re.compile(r"\d+")


def given_quantities(item: ReasoningItem) -> list[int]:
    """The numbers a question states (multiple-choice options are candidate answers, not givens)."""
    question = item.question.split(" Options: ")[0]
    return [int(n) for n in NUMBER.findall(question)]


def corrupt_step(item: ReasoningItem, index: int, step: str) -> ReasoningItem:
    steps = list(item.steps)
    steps[index] = step
    return dataclasses.replace(item, steps=steps)


def bump_last_number(text: str) -> str:
    match = list(NUMBER.finditer(text))[-1]
    return f"{text[: match.start()]}{int(match.group()) + 1}{text[match.end() :]}"


@pytest.fixture(scope="module")
def mixed_items() -> dict[str, list[ReasoningItem]]:
    """5,000 items per task, train and held-out mixed."""
    return {
        task: generate_items(task, 2500, seed=11, split="train") + generate_items(task, 2500, seed=11, split="heldout")
        for task in ALL_TASKS
    }


# --- registry, options, determinism ------------------------------------------------------------------------


def test_unknown_task_lists_valid_ones():
    with pytest.raises(ValueError, match="arithmetic, linear_equation, multiple_choice, logic"):
        generate_items("sudoku", 1, seed=0)


@pytest.mark.parametrize(
    ("task", "options", "message"),
    [
        ("arithmetic", {"split": "test"}, "Unknown split"),
        ("arithmetic", {"max_depth": 3}, "valid options are min_steps, max_steps, family"),
        ("arithmetic", {"min_steps": 4, "max_steps": 2}, "min_steps"),
        ("linear_equation", {"form": "cubic"}, "Unknown equation form"),
        ("multiple_choice", {"base": "logic"}, "Unknown base task"),
        ("logic", {"max_depth": 6}, "max_depth"),
        ("logic", {"world": "closed", "answer": "Unknown"}, "impossible in the closed world"),
        ("logic", {"attribute_pool": "huge"}, "Unknown attribute_pool"),
    ],
)
def test_bad_options_raise_actionable_errors(task, options, message):
    with pytest.raises(ValueError, match=message):
        generate_items(task, 1, seed=0, **options)


def test_negative_n_is_rejected():
    with pytest.raises(ValueError, match="n must be >= 0"):
        generate_items("logic", -1, seed=0)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_same_seed_same_items_and_item_i_independent_of_n(task):
    items = generate_items(task, 30, seed=5, split="heldout")
    assert items == generate_items(task, 30, seed=5, split="heldout")
    assert items[:7] == generate_items(task, 7, seed=5, split="heldout")
    assert items[29] == generate_item(task, 29, seed=5, split="heldout")
    assert items != generate_items(task, 30, seed=6, split="heldout")
    assert [item.id for item in items[:2]] == [f"{task}-heldout-0000000", f"{task}-heldout-0000001"]


def test_items_do_not_depend_on_the_hash_seed():
    code = (
        "import json, sys; from sagenano.data import TASKS, generate_items; "
        "json.dump([i.to_dict() for t in TASKS for i in generate_items(t, 25, seed=3)], sys.stdout)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    here = [item.to_dict() for task in ALL_TASKS for item in generate_items(task, 25, seed=3)]
    assert json.loads(other.stdout) == here


def test_generators_take_rng_and_split_first():
    for generator in TASKS.values():
        assert list(inspect.signature(generator).parameters)[:2] == ["rng", "split"]


# --- checker ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ALL_TASKS)
def test_checker_accepts_every_generated_item(task, mixed_items):
    failures = {item.id: problems for item in mixed_items[task] if (problems := check_item(item))}
    assert not failures, list(failures.items())[:3]


def test_a_forward_proof_opens_each_step_with_a_rule_of_the_question_and_answers_as_the_chain_does():
    for index in range(80):
        forward = generate_item("logic", index, 3, proof="forward")
        chain = generate_item("logic", index, 3)
        assert forward.question == chain.question and forward.answer == chain.answer  # the same theory
        assert not check_item(forward), check_item(forward)
        sentences = re.split(r"(?<=[.?]) ", forward.question)
        target = forward.meta["query"]["entity"]
        for step in forward.steps:
            if not step.startswith("No fact or rule proves"):
                opening = step.split(". ")[0] + "."
                assert opening in sentences and not opening.startswith(target), "a step opens with its rule"
    with pytest.raises(ValueError, match="Unknown proof style"):
        generate_item("logic", 0, 3, proof="backward")


def test_checker_flags_corrupted_arithmetic():
    for item in generate_items("arithmetic", 40, seed=1):
        assert check_item(corrupt_step(item, 0, bump_last_number(item.steps[0])))  # a wrong result
        assert check_item(dataclasses.replace(item, answer=str(int(item.answer) + 1)))  # a wrong answer
        first = item.dependencies[0][0]
        shifted = dataclasses.replace(first, start=first.start + 1, end=first.end + 1)
        dependencies = [[shifted, *item.dependencies[0][1:]], *item.dependencies[1:]]
        assert check_item(dataclasses.replace(item, dependencies=dependencies))  # a span off by one
        assert check_item(dataclasses.replace(item, dependencies=[[], *item.dependencies[1:]]))  # operands unsourced


def test_checker_flags_corrupted_linear_equations():
    for item in generate_items("linear_equation", 40, seed=1):
        assert check_item(dataclasses.replace(item, answer=str(int(item.answer) + 1)))
        assert check_item(corrupt_step(item, 0, bump_last_number(item.steps[0])))
        assert check_item(dataclasses.replace(item, question=bump_last_number(item.question)))


def test_checker_flags_corrupted_multiple_choice():
    for item in generate_items("multiple_choice", 40, seed=1, final_step="name"):
        wrong_letter = "ABCDE"[("ABCDE".index(item.answer) + 1) % 5]
        assert check_item(dataclasses.replace(item, answer=wrong_letter))
        last = len(item.steps) - 1
        assert check_item(corrupt_step(item, last, item.steps[last].replace(f"option {item.answer}", "option X")))
        options = item.question.split(" Options: ")[1]
        duplicated = item.question.replace(options, options.replace(f"{wrong_letter}) ", f"{wrong_letter}) 1"))
        assert check_item(dataclasses.replace(item, question=duplicated))
    for item in generate_items("multiple_choice", 40, seed=1):  # the walk
        assert not check_item(item)
        last = len(item.steps) - 1
        assert check_item(corrupt_step(item, last, item.steps[last].replace(" yes", " no")))  # a wrong verdict
        if item.answer != "A":  # an option skipped in the walk
            assert check_item(corrupt_step(item, last, re.sub(r"A\) \d+ no, ", "", item.steps[last])))


def test_checker_flags_corrupted_logic():
    flip = {"True": "False", "False": "True", "Unknown": "True"}
    for item in generate_items("logic", 60, seed=1):
        assert check_item(dataclasses.replace(item, answer=flip[item.answer]))
        first = item.steps[0]
        if " So " in first:
            assert check_item(corrupt_step(item, 0, first.split(". ", 1)[1]))  # a premise left out
            premises, conclusion = first.split(" So ")
            flipped = (
                conclusion.replace(" is not ", " is ")
                if " not " in conclusion
                else conclusion.replace(" is ", " is not ")
            )
            assert check_item(corrupt_step(item, 0, f"{premises} So {flipped}"))  # the opposite conclusion
        marker = "Answer True or False." if item.meta["world"] == "open" else "Answer True, False or Unknown."
        swapped = re.sub(r"Answer True.*$", marker, item.question)
        assert check_item(dataclasses.replace(item, question=swapped)) or item.answer == "True"


def test_checker_flags_a_distractor_that_is_a_dependency():
    item = generate_items("arithmetic", 1, seed=2)[0]
    used = item.dependencies[0][0]
    item = dataclasses.replace(item, distractors=[*item.distractors, dataclasses.replace(item.distractors[0], **{
        "start": used.start, "end": used.end, "text": used.text})])  # fmt: skip
    assert any("overlaps a dependency" in problem for problem in check_item(item))


# --- spans --------------------------------------------------------------------------------------------------


def test_arithmetic_spans_hold_exactly_the_operands():
    for item in generate_items("arithmetic", 300, seed=4):
        for index, step in enumerate(item.steps):
            left, _, right, _, _ = step.split(" ")
            assert [span.text for span in item.dependencies[index]] == [left, right]
        used = {int(n) for step in item.steps for n in NUMBER.findall(step)}
        assert 1 <= len(item.distractors) <= 2
        for span in item.distractors:
            assert NUMBER.fullmatch(span.text) and int(span.text) not in used


def test_dependencies_point_at_the_question_or_an_earlier_step():
    for task in ALL_TASKS:
        for item in generate_items(task, 100, seed=4):
            for index, spans in enumerate(item.dependencies):
                assert spans, (task, index)
                for span in spans:
                    text = item.question if span.source == "question" else item.steps[span.step]
                    assert span.step is None or span.step < index
                    assert text[span.start : span.end] == span.text


def test_logic_dependencies_are_whole_sentences_and_distractors_are_the_unused_ones():
    for item in generate_items("logic", 200, seed=4):
        sentences = re.split(r"(?<=[.?])\s+", item.question)
        question_spans = {span.text for spans in item.dependencies for span in spans if span.source == "question"}
        assert question_spans <= set(sentences)
        assert set(sentences) == question_spans | {s.text for s in item.distractors} | set(sentences[-2:])


def test_linear_dependencies_cover_the_numbers_of_each_step():
    for item in generate_items("linear_equation", 200, seed=4):
        for index, step in enumerate(item.steps):
            used = step.rsplit(" = ", 1)[0] if step.count(" = ") == 2 else step.split(" = ")[0]
            expected = Counter(NUMBER.findall(used))
            assert Counter(n for span in item.dependencies[index] for n in NUMBER.findall(span.text)) == expected


# --- splits -------------------------------------------------------------------------------------------------


def test_train_and_heldout_pools_are_disjoint():
    assert not TRAIN_NAMES & HELDOUT_NAMES
    assert not set(TRAIN_ATTRIBUTES) & set(HELDOUT_ATTRIBUTES)
    assert not set(WIDE_TRAIN_ATTRIBUTES) & set(HELDOUT_ATTRIBUTES)
    assert len(set(WIDE_TRAIN_ATTRIBUTES)) == len(WIDE_TRAIN_ATTRIBUTES) == 183, "distinct words"
    assert [n for n in range(1, 40) if is_heldout_quantity(n)] == [13, 17, 23, 27, 33, 37]


@pytest.mark.parametrize("task", ALL_TASKS)
def test_heldout_items_use_no_training_names_or_quantities(task, mixed_items):
    for item in mixed_items[task]:
        words = set(WORD.findall(item.question))
        quantities = given_quantities(item)
        if item.split == "heldout":
            assert not words & TRAIN_NAMES, item.question
            assert all(is_heldout_quantity(n) for n in quantities if n >= 10), item.question
        else:
            assert not words & HELDOUT_NAMES, item.question
            assert not any(is_heldout_quantity(n) for n in quantities), item.question
        if task == "logic":
            assert not words & set(TRAIN_ATTRIBUTES if item.split == "heldout" else HELDOUT_ATTRIBUTES)


# --- distributions and variety ------------------------------------------------------------------------------


def test_step_and_depth_distributions(mixed_items):
    arithmetic_steps = Counter(item.meta["num_steps"] for item in mixed_items["arithmetic"])
    assert set(arithmetic_steps) == {2, 3, 4, 5} and min(arithmetic_steps.values()) > 800
    assert all(len(item.steps) == item.meta["num_steps"] for item in mixed_items["arithmetic"])
    logic = mixed_items["logic"]
    depths = Counter(item.meta["depth"] for item in logic)
    assert set(depths) == {1, 2, 3, 4, 5} and min(depths.values()) > 700
    assert all(len(item.steps) == item.meta["depth"] for item in logic)
    answers = Counter((item.meta["world"], item.answer) for item in logic)
    assert set(answers) == {("closed", "True"), ("closed", "False"), ("open", "True"), ("open", "False"),
                            ("open", "Unknown")}  # fmt: skip
    letters = Counter(item.answer for item in mixed_items["multiple_choice"])
    assert set(letters) == set("ABCDE") and min(letters.values()) > 800


def test_step_range_and_logic_options_are_respected():
    assert {len(item.steps) for item in generate_items("arithmetic", 50, seed=0, min_steps=3, max_steps=3)} == {3}
    items = generate_items("logic", 50, seed=0, min_depth=4, max_depth=4, world="open", answer="Unknown")
    assert {(item.meta["depth"], item.meta["world"], item.answer) for item in items} == {(4, "open", "Unknown")}


def test_vocabulary_is_varied():
    arithmetic = generate_items("arithmetic", 1000, seed=0)
    names = Counter(word for item in arithmetic for word in WORD.findall(item.question) if word in TRAIN_NAMES)
    assert len(names) >= 60
    skeletons = {re.sub(r"\d+", "#", sentence) for item in arithmetic for sentence in item.question.split(". ")}
    assert len(skeletons) >= 500
    assert len({item.meta["family"] for item in arithmetic}) == 4
    logic = generate_items("logic", 1000, seed=0)
    attributes = {word for item in logic for word in WORD.findall(item.question) if word in TRAIN_ATTRIBUTES}
    assert len(attributes) == len(TRAIN_ATTRIBUTES)
    openings = {sentence.split(" ")[0] for item in logic for sentence in re.split(r"(?<=[.?])\s+", item.question)}
    assert {"If", "People", "Someone", "All"} <= openings and len(RULE_TEMPLATES) == 6
    equations = generate_items("linear_equation", 1000, seed=0)
    assert len({item.meta["form"] for item in equations}) == 5 and len({item.question for item in equations}) > 950


# --- text rendering -----------------------------------------------------------------------------------------


def test_training_text_prompt_and_answer_round_trip(tokenizer):
    for task in ALL_TASKS:
        item = generate_items(task, 1, seed=9)[0]
        text = training_text(item)
        assert text.startswith(prompt_text(item.question))
        assert text == (
            f"<|question|>{item.question}<|step|>"
            + "<|step|>".join(item.steps)
            + f"<|answer|>{item.answer}<|endoftext|>"
        )
        assert parse_answer(text) == item.answer
        assert parse_answer(text[len(prompt_text(item.question)) :]) == item.answer
        ids = tokenizer(text).input_ids
        assert ids.count(step_token_id(tokenizer)) == len(item.steps)
    assert parse_answer("<|step|>12 + 7 = 19<|answer|> 19 ") == "19"
    assert parse_answer("<|answer|>C<|explanation|>because") == "C"
    assert parse_answer("12 + 7 = 19") is None
    assert {"<|question|>", "<|step|>", "<|answer|>", "<|endoftext|>"} <= set(SPECIAL_TOKENS.values())


# --- JSONL --------------------------------------------------------------------------------------------------


def test_jsonl_round_trip_is_streaming(tmp_path):
    items = [item for task in ALL_TASKS for item in generate_items(task, 5, seed=1)]
    path = tmp_path / "items.jsonl"
    assert write_jsonl(items, path) == len(items)
    assert inspect.isgenerator(iter_jsonl(path))
    assert read_jsonl(path) == items
    assert ReasoningItem.from_dict(json.loads(json.dumps(items[0].to_dict()))) == items[0]
    assert isinstance(items[0].dependencies[0][0], Dependency)
    assert os.listdir(tmp_path) == ["items.jsonl"]


def test_iter_jsonl_names_the_malformed_line(tmp_path):
    good = json.dumps(generate_items("logic", 1, seed=0)[0].to_dict())
    path = tmp_path / "broken.jsonl"
    path.write_text(f"{good}\n\n{{not json\n{good}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.jsonl, line 3: not valid JSON"):
        list(iter_jsonl(path))
    path.write_text(f'{good}\n{{"id": "x"}}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: .*missing the field\(s\) task, split"):
        list(iter_jsonl(path))


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text("old\n", encoding="utf-8")

    def failing():
        yield generate_items("arithmetic", 1, seed=0)[0]
        raise RuntimeError("generator broke")

    with pytest.raises(RuntimeError, match="generator broke"):
        write_jsonl(failing(), path)
    assert path.read_text(encoding="utf-8") == "old\n"
    assert os.listdir(tmp_path) == ["items.jsonl"]


def test_synth_writes_checked_items(tmp_path):
    out = tmp_path / "data" / "logic.jsonl"
    assert synth("logic", 40, seed=3, out=out, split="heldout") == 40
    assert read_jsonl(out) == generate_items("logic", 40, seed=3, split="heldout")
    with pytest.raises(ValueError, match="Unknown task"):
        synth("chess", 1, seed=0, out=Path(tmp_path / "x.jsonl"))


def test_the_wide_attribute_pool_widens_training_logic_only_and_its_items_check():
    wide = generate_items("logic", 2000, seed=3, attribute_pool="wide")
    assert all(not check_item(item) for item in wide)
    used = {word for item in wide for word in WORD.findall(item.question) if word in WIDE_TRAIN_ATTRIBUTES}
    assert len(used) > 150, "the items use the wide pool, not the 28 base attributes"
    assert not used & set(HELDOUT_ATTRIBUTES)
    heldout = generate_items("logic", 50, seed=3, split="heldout", attribute_pool="wide")
    assert heldout == generate_items("logic", 50, seed=3, split="heldout"), "the held-out split is unchanged"
    assert generate_items("logic", 50, seed=3, attribute_pool="wide") == wide[:50]
