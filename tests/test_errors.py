"""The error taxonomy: each rule on a gold chain edited to make exactly that mistake, and the per-category counts."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

import pytest
import torch

from conftest import make_sage
from sagenano.data import ReasoningItem, generate_items, prompt_text, training_text
from sagenano.data.checker import ParsedTheory
from sagenano.data.format import ANSWER, END, STEP
from sagenano.eval.error_taxonomy import CATEGORIES, ErrorCase, classify_error, split_chain, taxonomy

EQUATION = re.compile(r"^(\d+) ([-+*/]) (\d+) = (\d+)$")
SEED = 11
EXACT = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def find(task: str, wanted: Callable[[ReasoningItem], bool]) -> ReasoningItem:
    """The first held-out item of `task` that has what a test needs."""
    return next(item for item in generate_items(task, 200, SEED, "heldout") if wanted(item))


def chain(steps: list[str], answer: str | None) -> str:
    """What the model writes after the prompt: steps, then `<|answer|>` and the answer (unless None)."""
    return STEP.join(steps) + ("" if answer is None else f"{ANSWER}{answer}{END}")


def gold_chain(item: ReasoningItem) -> str:
    return training_text(item)[len(prompt_text(item.question)) :]


def equation(step: str) -> tuple[int, str, int, int]:
    a, op, b, c = EQUATION.match(step).groups()
    return int(a), op, int(b), int(c)


def wrong(item: ReasoningItem) -> str:
    """An answer that is not the item's."""
    return {"True": "False", "False": "Unknown", "Unknown": "True"}.get(item.answer, item.answer + "0")


@pytest.fixture(scope="module")
def story() -> ReasoningItem:
    """An arithmetic word problem of 3+ steps with a distractor, whose first step adds or subtracts."""
    return find("arithmetic", lambda i: len(i.steps) >= 3 and i.distractors and equation(i.steps[0])[1] in "+-")


def test_split_chain_reads_steps_and_answer():
    assert split_chain(f"1 + 2 = 3{STEP}3 * 4 = 12{ANSWER}12{END}") == (["1 + 2 = 3", "3 * 4 = 12"], "12")
    assert split_chain(f"1 + 2 = 3{STEP}3 * 4 = 12") == (["1 + 2 = 3", "3 * 4 = 12"], None)
    assert split_chain("") == ([], None)


@pytest.mark.parametrize("task", ["arithmetic", "linear_equation", "multiple_choice", "logic"])
def test_right_answer_is_no_error(task):
    for item in generate_items(task, 20, SEED, "heldout"):
        assert classify_error(item, gold_chain(item)) is None


def test_unknown_task_is_refused(story):
    with pytest.raises(ValueError, match="arithmetic"):
        classify_error(ReasoningItem(**{**story.to_dict(), "task": "gsm8k", "dependencies": []}), "")


# --- 1: incomplete reasoning ----------------------------------------------------------------------------------


def test_no_answer_is_incomplete_even_after_a_faulty_step(story):
    case = classify_error(story, chain(story.steps[:1], None))
    assert (case.category, case.step) == ("incomplete_reasoning", None)
    assert "1 step(s) without" in case.reason and story.id == case.item_id
    a, op, b, c = equation(story.steps[0])
    assert classify_error(story, chain([f"{a} {op} {b} = {c + 1}"], None)).category == "incomplete_reasoning"


def test_short_chain_is_incomplete_unless_a_step_is_faulty(story):
    steps = story.steps[:-1]
    case = classify_error(story, chain(steps, str(equation(steps[-1])[3])))
    assert (case.category, case.step) == ("incomplete_reasoning", None)
    assert f"after {len(steps)} valid step(s)" in case.reason and f"needs {len(story.steps)}" in case.reason
    a, op, b, c = equation(steps[0])
    faulty = classify_error(story, chain([f"{a} {op} {b} = {c + 1}", *steps[1:]], wrong(story)))
    assert (faulty.category, faulty.step) == ("calculation", 0)


# --- 2: calculation -----------------------------------------------------------------------------------------


def test_wrong_result_is_a_calculation_error(story):
    a, op, b, c = equation(story.steps[1])
    steps = [*story.steps]
    steps[1] = f"{a} {op} {b} = {c + 10}"
    case = classify_error(story, chain(steps, wrong(story)))
    assert (case.category, case.step) == ("calculation", 1)
    assert case.reason == f"step 1 says {a} {op} {b} = {c + 10}; {a} {op} {b} is {c}"


def test_linear_equation_calculation_errors():
    item = find("linear_equation", lambda i: i.meta["form"] == "add")  # "3y = 37 - 1 = 36"
    first = item.steps[0]
    total = int(first.rsplit(" = ", 1)[1])
    steps = [first.rsplit(" = ", 1)[0] + f" = {total + 1}", *item.steps[1:]]
    case = classify_error(item, chain(steps, wrong(item)))
    assert (case.category, case.step) == ("calculation", 0)
    assert case.reason.endswith(f"is {total}")
    both = find("multiple_choice", lambda i: i.meta["base_meta"].get("form") == "both")  # "8x - 2x = 6x" first
    left, right = both.steps[0].split(" = ")
    collected = classify_error(both, chain([f"{left} = 1{right[-1]}", *both.steps[1:]], wrong(both)))
    assert (collected.category, collected.step) == ("calculation", 0) and collected.reason.endswith(f"is {right}")


def test_inexact_division_is_a_calculation_error(story):
    case = classify_error(story, chain(["7 / 2 = 3"], "3"))
    assert case.category == "calculation" and case.reason.endswith("7 / 2 is 3.5")


# --- 3: context misunderstanding ------------------------------------------------------------------------------


def test_distractor_quantity_is_a_context_misunderstanding(story):
    distractor = int(story.distractors[0].text)
    _, op, b, _ = equation(story.steps[0])
    steps = [f"{distractor} {op} {b} = {distractor + b if op == '+' else distractor - b}", *story.steps[1:]]
    case = classify_error(story, chain(steps, wrong(story)))
    assert (case.category, case.step) == ("context_misunderstanding", 0)
    assert f"uses {distractor}, the distractor quantity in {story.distractors[0].text!r}" in case.reason


def test_number_from_nowhere_is_a_context_misunderstanding(story):
    k = next(k for k, s in enumerate(story.steps) if k and equation(s)[1] != "/")
    a, op, _, _ = equation(story.steps[k])
    steps = [*story.steps]
    steps[k] = f"{a} {op} 9999 = {EXACT[op](a, 9999)}"  # exact, so only the operand is wrong
    case = classify_error(story, chain(steps, wrong(story)))
    assert (case.category, case.step) == ("context_misunderstanding", k)
    assert "uses 9999, which is neither a number of the question nor a result of an earlier step" in case.reason


def test_wrong_option_letter_is_a_context_misunderstanding():
    item = find("multiple_choice", lambda i: True)
    value = item.meta["options"][item.answer]
    other = next(letter for letter in "ABCDE" if letter != item.answer)
    steps = [*item.steps[:-1], f"The answer is {value}, which is option {other}."]
    case = classify_error(item, chain(steps, other))
    assert (case.category, case.step) == ("context_misunderstanding", len(steps) - 1)
    assert case.reason.endswith(f"option {other} is {item.meta['options'][other]}")


def test_logic_rule_not_in_the_question_is_a_context_misunderstanding():
    item = find("logic", lambda i: i.answer == "True" and len(i.steps) >= 2)
    rule = re.split(r"(?<=\.) ", item.steps[0])[-2]
    invented = "People who are purple are quick."
    steps = [item.steps[0].replace(rule, invented), *item.steps[1:]]
    case = classify_error(item, chain(steps, wrong(item)))
    assert (case.category, case.step) == ("context_misunderstanding", 0)
    assert repr(invented) in case.reason and "not a sentence of the question" in case.reason


# --- 4: logical fallacy -----------------------------------------------------------------------------------------


def test_underivable_logic_conclusion_is_a_fallacy():
    item = find("logic", lambda i: i.answer == "True" and len(i.steps) >= 2)
    theory = ParsedTheory(item.question)
    entity, attribute = theory.query
    assert (entity, attribute, False) not in theory.closure()
    last = item.steps[-1].replace(f"So {entity} is {attribute}.", f"So {entity} is not {attribute}.")
    case = classify_error(item, chain([*item.steps[:-1], last], "False"))
    assert (case.category, case.step) == ("logical_fallacy", len(item.steps) - 1)
    assert f"concludes 'So {entity} is not {attribute}.'" in case.reason and "do not imply" in case.reason


@pytest.mark.parametrize(("world", "gold", "said", "evidence"), [
    ("open", "Unknown", "False", "the world is open, so the verdict is Unknown"),
    ("closed", "False", "Unknown", "the world is closed, so the verdict is False"),
    ("open", "True", "Unknown", "establishes that"),
])  # fmt: skip
def test_verdict_that_does_not_follow_is_a_fallacy(world, gold, said, evidence):
    item = find("logic", lambda i: i.meta["world"] == world and i.answer == gold)
    case = classify_error(item, chain(item.steps, said))
    assert (case.category, case.step) == ("logical_fallacy", None)
    assert f"the verdict {said!r} does not follow" in case.reason and evidence in case.reason


def test_wrong_operation_on_the_right_numbers_is_a_fallacy(story):
    a, op, b, _ = equation(story.steps[0])
    swapped = "-" if op == "+" else "+"
    steps = [f"{a} {swapped} {b} = {a - b if swapped == '-' else a + b}", *story.steps[1:]]
    case = classify_error(story, chain(steps, wrong(story)))
    assert (case.category, case.step) == ("logical_fallacy", 0)
    assert case.reason == f"step 0 computes {a} {swapped} {b} where the question calls for {a} {op} {b}"
    if op == "-":
        reversed_case = classify_error(story, chain([f"{b} - {a} = {b - a}", *story.steps[1:]], wrong(story)))
        assert (reversed_case.category, reversed_case.step) == ("logical_fallacy", 0)


# --- 5 and 6: alternative path selection, other -----------------------------------------------------------------


def test_alternative_path_needs_a_likely_gold_token(tokenizer):
    item = find("arithmetic", lambda i: any(equation(s)[1] == "+" for s in i.steps[1:]))
    k = next(k for k, s in enumerate(item.steps) if k and equation(s)[1] == "+")
    a, _, b, c = equation(item.steps[k])
    steps = [*item.steps]
    steps[k] = f"{b} + {a} = {c}"  # the same sum the other way round: every step is still right
    generated = chain(steps, wrong(item))
    other = classify_error(item, generated)
    assert other.category == "other" and "rule 5 needs a model" in other.reason

    model = make_sage(tokenizer)
    gold = tokenizer(training_text(item), add_special_tokens=False).input_ids
    mine = tokenizer(prompt_text(item.question) + generated, add_special_tokens=False).input_ids
    where = next(i for i, (g, m) in enumerate(zip(gold, mine, strict=False)) if g != m)
    with torch.no_grad():
        p = model(torch.tensor([gold[:where]])).logits[0, -1].softmax(-1)[gold[where]].item()

    case = classify_error(item, generated, model, tokenizer, min_gold_prob=p / 2)
    assert (case.category, case.step) == ("alternative_path_selection", k)
    assert repr(tokenizer.decode([gold[where]])) in case.reason and f"p={p:.3f}" in case.reason
    assert repr(tokenizer.decode([mine[where]])) in case.reason
    above = classify_error(item, generated, model, tokenizer, min_gold_prob=p * 2)
    assert above.category == "other" and "skipped" not in above.reason


# --- the taxonomy -------------------------------------------------------------------------------------------------


def test_taxonomy_counts_shares_and_first_example():
    cases = [
        ErrorCase("calculation", 1, "step 1 says 2 + 2 = 5; 2 + 2 is 4", "a"),
        ErrorCase("incomplete_reasoning", None, "no answer", "b"),
        ErrorCase("calculation", 0, "step 0 says 3 * 3 = 8; 3 * 3 is 9", "c"),
        ErrorCase("other", None, "no rule fired", "d"),
    ]
    table = taxonomy(cases)
    rows = table["categories"]
    assert table["total"] == 4 and list(rows) == list(CATEGORIES)
    assert sum(row["count"] for row in rows.values()) == 4 and sum(row["share"] for row in rows.values()) == 1.0
    assert rows["calculation"]["count"] == 2 and rows["calculation"]["example"]["item_id"] == "a"
    assert rows["logical_fallacy"] == {"count": 0, "share": 0.0, "example": None}
    assert taxonomy([])["categories"]["other"] == {"count": 0, "share": 0.0, "example": None}
