"""The paper's error taxonomy, assigned by rules to wrong answers on the synthetic tasks, whose failing step is known.

Each wrong answer gets one category from the rules below; a right answer gets none. Steps are counted from 0,
and "step k" in a reason is the same index as `ErrorCase.step`.

1. incomplete_reasoning — the chain stopped before finishing:
   a. the chain has no `<|answer|>` (checked first: a chain that never answers is incomplete whatever it wrote), or
   b. it answers after fewer steps than the gold solution has, and no step breaks rules 2–4.
   `step` is None: the failing step is one that was never written.
2. calculation — (arithmetic, linear_equation, multiple_choice) a step's written arithmetic is wrong: the last
   "a op b = c" in the step (op one of + - * /) where c is not the exact rational value of a op b, or, in a step
   with no such equation, a collection "ax - bx = cx" where c is not a - b.
3. context_misunderstanding — the step misreads the question:
   (arithmetic, linear_equation, multiple_choice) an operand (an integer before the step's last "=", or the N of
   "The answer is N, which is option L.") that is not the result of an earlier step (an integer after its last
   "=") and is either a distractor quantity (in one of `item.distractors` and in none of the gold steps' question
   spans) or no number of the question at all (the options do not count as the question); or a final step that
   names an option whose value is not N.
   (logic) a premise sentence that is neither a sentence of the question nor the conclusion of an earlier step.
4. logical_fallacy — the step, or the verdict, does not follow:
   (arithmetic, linear_equation, multiple_choice) a step whose last equation has the gold step's operands but
   another operation, or the operands of a non-commutative operation (-, /) the other way round;
   (logic) a conclusion "So X is (not) Y." that the question's facts and rules do not imply (forward-chaining
   closure), or, after valid and complete steps, a verdict that is not the one the chain's own conclusions and the
   question's facts give under the world assumption (open: True, False or Unknown; closed: True or False).
   `step` is None for a wrong verdict: the error is in the answer, after the last step.
5. alternative_path_selection — (only given a model and its tokenizer) the model chose another branch at a
   decision point: the prompt plus gold chain is teacher-forced, and at the first token where the model's chain
   leaves it, the gold token had probability >= `min_gold_prob` (0.05) under the model. `step` is the model's
   step holding that token (None if it is in the answer).
6. other — no rule fired.

Order of evaluation: 1a; then rules 2–4 step by step, so that the first faulty step is the failing step (when one
step breaks several rules the lowest-numbered names it); then 1b; then the verdict part of 4; then 5; then 6.
"""

from __future__ import annotations

import operator
import re
from collections import Counter
from dataclasses import asdict, dataclass
from fractions import Fraction

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data.checker import CONCLUSION, SENTENCE_END, ParsedTheory, parse_atom, parse_fact
from ..data.format import ANSWER, END, STEP, parse_answer, prompt_text, training_text
from ..data.schema import ReasoningItem
from ..decoding import context_length

CATEGORIES = (
    "incomplete_reasoning",
    "calculation",
    "context_misunderstanding",
    "logical_fallacy",
    "alternative_path_selection",
    "other",
)
NUMERIC_TASKS = ("arithmetic", "linear_equation", "multiple_choice")
TASKS = (*NUMERIC_TASKS, "logic")
MIN_GOLD_PROB = 0.05  # rule 5: a gold token at least this likely was a real branch the model could have taken

# Overlapping matches (a lookahead) so that the last equation of "1 + 2 = 3 + 4 = 7" is found.
_EQUATION = re.compile(r"(?=(?<![\w)-])(-?\d+) ?([-+*/]) ?(-?\d+) ?= ?(-?\d+)(?![\w(]))")
_COLLECTION = re.compile(r"(?<![\w)])(\d*)([a-z]) - (\d*)\2 = (-?\d*)\2(?!\w)")
_INTEGER = re.compile(r"\d+")
_CHOICE = re.compile(r"The answer is (-?\d+), which is option ([A-E])")
_NO_PROOF = "No fact or rule proves"

Finding = tuple[str, int | None, str]  # category, failing step, reason


@dataclass(frozen=True)
class ErrorCase:
    """One wrong answer: its category, the failing step of the model's chain (or None) and the evidence."""

    category: str
    step: int | None  # index into the model's steps; None when the failure is not in a written step
    reason: str  # one sentence naming the evidence
    item_id: str


def split_chain(generated: str) -> tuple[list[str], str | None]:
    """The model's steps and its answer.

    Args:
        generated: The model's text after the prompt (which ends with `<|step|>`), special tokens kept.

    Returns:
        The stripped texts between `<|step|>` markers up to `<|answer|>` (or `<|endoftext|>`, or the end), and the
        parsed answer (None when the chain has no `<|answer|>`).
    """
    ends = [i for i in (generated.find(ANSWER), generated.find(END)) if i >= 0]
    body = generated[: min(ends)] if ends else generated
    steps = [step.strip() for step in body.split(STEP)] if body.strip() else []
    return steps, parse_answer(generated)


def classify_error(
    item: ReasoningItem,
    generated: str,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    min_gold_prob: float = MIN_GOLD_PROB,
) -> ErrorCase | None:
    """The category of a wrong answer, by the rules of the module docstring.

    Args:
        item: A synthetic item with its gold steps (tasks arithmetic, linear_equation, multiple_choice, logic).
        generated: The model's text after the prompt, as `sagenano.eval.runner` records it in "chain".
        model: The model that wrote the chain; with `tokenizer` it enables rule 5 (alternative_path_selection).
        tokenizer: The model's tokenizer.
        min_gold_prob: Rule 5's threshold on the gold token's probability at the divergence.

    Returns:
        The error case, or None when the answer is right.

    Raises:
        ValueError: If the item's task is not a synthetic task.
    """
    if item.task not in TASKS:
        raise ValueError(f"classify_error needs a synthetic task, got {item.task!r}: use one of {', '.join(TASKS)}")
    steps, answer = split_chain(generated)
    if answer == item.answer:
        return None
    rule5 = model is not None and tokenizer is not None
    finding = (
        _unanswered(steps, answer)
        or _first_faulty_step(item, steps)
        or _short_chain(item, steps, answer)
        or (_wrong_verdict(item, steps, answer) if item.task == "logic" else None)
        or (_branch_choice(item, generated, model, tokenizer, min_gold_prob) if rule5 else None)
        or _no_rule(item, steps, answer, rule5)
    )
    return ErrorCase(*finding, item_id=item.id)


def taxonomy(cases: list[ErrorCase]) -> dict:
    """Counts and shares per category, with the first case of each present category as its example."""
    counts = Counter(case.category for case in cases)
    unknown = sorted(set(counts) - set(CATEGORIES))
    assert not unknown, f"error cases with unknown categories {unknown}"
    examples: dict[str, ErrorCase] = {}
    for case in cases:
        examples.setdefault(case.category, case)
    total = len(cases)
    return {
        "total": total,
        "categories": {
            category: {
                "count": counts[category],
                "share": counts[category] / total if total else 0.0,
                "example": asdict(examples[category]) if category in examples else None,
            }
            for category in CATEGORIES
        },
    }


# ---------------------------------------------------------------------------------------------------
# Rule 1: incomplete reasoning


def _unanswered(steps: list[str], answer: str | None) -> Finding | None:
    if answer is not None:
        return None
    return "incomplete_reasoning", None, f"the chain stops after {len(steps)} step(s) without an {ANSWER}"


def _short_chain(item: ReasoningItem, steps: list[str], answer: str | None) -> Finding | None:
    if len(steps) >= len(item.steps):
        return None
    reason = (
        f"the chain answers {answer!r} after {len(steps)} valid step(s); the solution needs {len(item.steps)} "
        f"to reach {item.answer!r}"
    )
    return "incomplete_reasoning", None, reason


# ---------------------------------------------------------------------------------------------------
# Rules 2–4, step by step


def _first_faulty_step(item: ReasoningItem, steps: list[str]) -> Finding | None:
    """The first step that breaks rule 2, 3 or 4 (the lowest-numbered rule names it)."""
    if item.task == "logic":
        return _first_faulty_inference(item, steps)
    quantities = _Quantities.of(item)
    results: set[int] = set()
    for index, step in enumerate(steps):
        for category, fault in (
            ("calculation", _miscalculation(step)),
            ("context_misunderstanding", _misread_quantity(quantities, step, results)),
            ("logical_fallacy", _wrong_operation(item, index, step)),
        ):
            if fault:
                return category, index, f"step {index} {fault}"
        results |= _results(step)
    return None


def _last_equation(step: str) -> tuple[str, str, str, str] | None:
    """The last "a op b = c" written in a step, as its four strings."""
    matches = list(_EQUATION.finditer(step))
    return (matches[-1][1], matches[-1][2], matches[-1][3], matches[-1][4]) if matches else None


_OPERATIONS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def _exact(left: int, operation: str, right: int) -> Fraction | None:
    """`left operation right` as an exact rational; None for a division by zero."""
    if operation == "/" and right == 0:
        return None
    return _OPERATIONS[operation](Fraction(left), Fraction(right))


def _show(value: Fraction | None) -> str:
    if value is None:
        return "undefined"
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"


def _miscalculation(step: str) -> str | None:
    """Rule 2 on one step: what its wrong arithmetic says and what is right, or None."""
    if equation := _last_equation(step):
        left, operation, right, written = equation
        value = _exact(int(left), operation, int(right))
        if value != int(written):
            return f"says {left} {operation} {right} = {written}; {left} {operation} {right} is {_show(value)}"
        return None
    if (match := _COLLECTION.search(step)) and int(match[1] or 1) - int(match[3] or 1) != int(match[4] or 1):
        variable = match[2]
        right = f"{int(match[1] or 1) - int(match[3] or 1)}{variable}"
        return f"says {match[0]}; {match[1]}{variable} - {match[3]}{variable} is {right}"
    return None


@dataclass(frozen=True)
class _Quantities:
    """What a numeric item's steps may use: the question's numbers, and its distractor quantities."""

    question: frozenset[int]  # numbers of the question text (before any options)
    distractors: dict[int, str]  # number -> the distractor span that holds it, for numbers no gold step reads
    options: dict[str, str]  # multiple choice: letter -> value

    @classmethod
    def of(cls, item: ReasoningItem) -> _Quantities:
        options = item.meta.get("options", {})
        cut = item.question.find(" Options:")
        body = item.question[:cut] if options and cut >= 0 else item.question
        used = {
            int(n)
            for spans in item.dependencies
            for span in spans
            if span.source == "question"
            for n in _INTEGER.findall(span.text)
        }
        distractors = {int(n): span.text for span in item.distractors for n in _INTEGER.findall(span.text)}
        return cls(
            question=frozenset(int(n) for n in _INTEGER.findall(body)),
            distractors={n: text for n, text in distractors.items() if n not in used},
            options=dict(options),
        )


def _operands(step: str) -> list[int]:
    """Integers a step reads: those before its last "=" (the whole step when it has none)."""
    if choice := _CHOICE.search(step):
        return [abs(int(choice[1]))]
    return [int(n) for n in _INTEGER.findall(step.rpartition("=")[0] if "=" in step else step)]


def _results(step: str) -> set[int]:
    """Integers a step produces: those after its last "=" (absolute values)."""
    return {int(n) for n in _INTEGER.findall(step.rpartition("=")[2])} if "=" in step else set()


def _misread_quantity(quantities: _Quantities, step: str, results: set[int]) -> str | None:
    """Rule 3 on one numeric step, given the results of the earlier steps."""
    for number in _operands(step):
        if number in results:
            continue
        if number in quantities.distractors:
            return f"uses {number}, the distractor quantity in {quantities.distractors[number]!r}"
        if number not in quantities.question:
            return f"uses {number}, which is neither a number of the question nor a result of an earlier step"
    choice = _CHOICE.search(step)
    if choice and quantities.options and quantities.options.get(choice[2]) != choice[1]:
        letter = choice[2]
        return f"says {choice[1]} is option {letter}; option {letter} is {quantities.options.get(letter, 'absent')}"
    return None


def _wrong_operation(item: ReasoningItem, index: int, step: str) -> str | None:
    """Rule 4 on one numeric step: the gold step's numbers, combined by another operation (or reversed)."""
    mine = _last_equation(step)
    gold = _last_equation(item.steps[index]) if index < len(item.steps) else None
    if not mine or not gold:
        return None
    (a, op, b, _), (ga, gop, gb, _) = mine, gold
    same_numbers = sorted((int(a), int(b))) == sorted((int(ga), int(gb)))
    if not same_numbers or (a, op, b) == (ga, gop, gb) or (op == gop and op in "+*"):
        return None
    return f"computes {a} {op} {b} where the question calls for {ga} {gop} {gb}"


def _first_faulty_inference(item: ReasoningItem, steps: list[str]) -> Finding | None:
    """Rules 3 and 4 on logic steps: premises must be the question's sentences or earlier conclusions, and every
    conclusion must be in the closure of the question's theory."""
    theory = ParsedTheory(item.question)
    closure = theory.closure()
    sentences = set(SENTENCE_END.split(item.question.strip()))
    concluded: set[str] = set()
    for index, step in enumerate(steps):
        parts = [part for part in SENTENCE_END.split(step) if part]
        conclusions = [part for part in parts if CONCLUSION.match(part)]
        for premise in parts:
            if premise in conclusions or premise.startswith(_NO_PROOF) or premise in sentences or premise in concluded:
                continue
            reason = f"step {index} cites {premise!r}, which is not a sentence of the question"
            if parse_fact(premise):
                reason += " nor the conclusion of an earlier step"
            return "context_misunderstanding", index, reason
        for conclusion in conclusions:
            match = CONCLUSION.match(conclusion)
            if (match[1], *parse_atom(match[2])) not in closure:
                reason = f"step {index} concludes {conclusion!r}, which the question's facts and rules do not imply"
                return "logical_fallacy", index, reason
            concluded.add(conclusion.removeprefix("So "))
    return None


def _wrong_verdict(item: ReasoningItem, steps: list[str], answer: str | None) -> Finding | None:
    """Rule 4's verdict part: the answer the chain's own conclusions and the facts give is not the one it gave."""
    theory = ParsedTheory(item.question)
    if theory.query is None:
        return None
    entity, attribute = theory.query
    known = {(e, a, h) for e, a, h in theory.facts}
    for step in steps:
        for part in SENTENCE_END.split(step):
            if match := CONCLUSION.match(part):
                known.add((match[1], *parse_atom(match[2])))
    if (entity, attribute, True) in known:
        implied, why = "True", f"the chain establishes that {entity} is {attribute}"
    elif (entity, attribute, False) in known:
        implied, why = "False", f"the chain establishes that {entity} is not {attribute}"
    elif theory.world == "closed":
        implied, why = "False", f"nothing in the chain proves that {entity} is {attribute}, and the world is closed"
    else:
        implied = "Unknown"
        why = f"nothing in the chain proves that {entity} is {attribute} or not, and the world is open"
    if answer == implied:
        return None
    return "logical_fallacy", None, f"the verdict {answer!r} does not follow: {why}, so the verdict is {implied}"


# ---------------------------------------------------------------------------------------------------
# Rule 5: alternative path selection


@torch.no_grad()
def _branch_choice(
    item: ReasoningItem,
    generated: str,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    min_gold_prob: float,
) -> Finding | None:
    """The first token where the model's chain leaves the gold chain, if the gold token was a likely branch."""
    prompt = prompt_text(item.question)
    gold = tokenizer(training_text(item), add_special_tokens=False).input_ids
    mine = tokenizer(prompt + generated, add_special_tokens=False).input_ids
    start = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    shared = min(len(gold), len(mine))
    differs = (torch.tensor(gold[start:shared]) != torch.tensor(mine[start:shared])).nonzero()
    if not len(differs):
        return None
    where = start + int(differs[0])
    limit = context_length(model)
    if limit is not None and where > limit:
        return None
    logits = model(torch.tensor([gold[:where]], device=model.device)).logits[0, -1]  # (V,): next-token logits
    probs = logits.float().softmax(-1)
    gold_prob, mine_prob = float(probs[gold[where]]), float(probs[mine[where]])
    if gold_prob < min_gold_prob:
        return None
    rank = int((probs > probs[gold[where]]).sum()) + 1
    written = tokenizer.decode(mine[start:where])
    step = None if ANSWER in written else written.count(STEP)
    place = "in the answer" if step is None else f"in step {step}"
    reason = (
        f"{place} the model wrote {tokenizer.decode([mine[where]])!r} (p={mine_prob:.3f}) where the gold chain has "
        f"{tokenizer.decode([gold[where]])!r} (p={gold_prob:.3f}, rank {rank}), a branch at p >= {min_gold_prob}"
    )
    return "alternative_path_selection", step, reason


def _no_rule(item: ReasoningItem, steps: list[str], answer: str | None, rule5: bool) -> Finding:
    skipped = "" if rule5 else " (rule 5 needs a model and was skipped)"
    reason = f"no rule fired on the {len(steps)} step(s){skipped}; the answer is {answer!r}, not {item.answer!r}"
    return "other", None, reason
