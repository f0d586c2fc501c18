"""GSM8K-like word problems: one quantity chain of 2–5 exact integer steps plus distractor sentences."""

from __future__ import annotations

import operator
import random
from collections.abc import Callable
from dataclasses import dataclass

from .schema import Dependency, ReasoningItem, validate_split
from .text import Sentence, capitalize, join_sentences
from .vocab import (
    CONTAINERS,
    COUNTABLES,
    CURRENCIES,
    EXTRAS,
    GOODS,
    PEOPLE,
    RELATIVES,
    Person,
    allowed_quantities,
)

MAX_VALUE = 999  # every given quantity and every intermediate result stays in 1..MAX_VALUE
OPERATIONS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.floordiv,  # only used when the division is exact
}
FAMILIES: tuple[str, ...] = ("collection", "boxes", "pair", "money")

# Sentences that change the running count of a person's things. Fields: S / s (subject, sentence-initial or
# not), him, pos (object and possessive forms), obj, friend, n (the given quantity).
COUNT_CHANGES: dict[str, tuple[str, ...]] = {
    "+": (
        "{S} buys {n} more {obj}.",
        "{S} finds {n} more {obj}.",
        "{S} gets {n} more {obj} from {friend}.",
        "{friend} gives {him} {n} more {obj}.",
        "Then {s} collects {n} more {obj}.",
        "Later, {s} wins {n} more {obj} in a game.",
    ),
    "-": (
        "{S} gives {n} {obj} to {friend}.",
        "{S} sells {n} of the {obj}.",
        "{S} loses {n} {obj}.",
        "Then {s} gives away {n} {obj}.",
        "{friend} borrows {n} of {pos} {obj}.",
    ),
    "*": (
        "{S} ends up with {n} times as many {obj} as before.",
        "After a trade, {s} has {n} times as many {obj} as before.",
        "Then the number of {obj} {s} has becomes {n} times as large.",
    ),
    "/": (
        "{S} splits the {obj} into {n} equal groups and keeps one group.",
        "{S} puts the {obj} into {n} equal piles and keeps only one pile.",
        "{S} divides the {obj} equally into {n} bags and keeps one bag.",
    ),
}
# Sentences that change the running cost of a shopping trip. Fields as above plus cur and extra.
COST_CHANGES: dict[str, tuple[str, ...]] = {
    "+": (
        "{S} also buys {extra} for {n} {cur}.",
        "{S} also pays {n} {cur} for delivery.",
        "Then {s} spends {n} more {cur} on {extra}.",
    ),
    "-": (
        "{S} gets a discount of {n} {cur}.",
        "{S} uses a coupon worth {n} {cur}.",
        "The shop gives {him} {n} {cur} off.",
    ),
    "/": (
        "{S} shares the cost equally with friends, {n} people in all, and pays one share.",
        "The cost is split equally among {n} people, and {s} pays one share.",
    ),
}
COUNT_WEIGHTS: dict[str, int] = {"+": 3, "-": 3, "*": 2, "/": 2}
COST_WEIGHTS: dict[str, int] = {"+": 3, "-": 2, "/": 1}

COLLECTION_STARTS: tuple[str, ...] = (
    "{name} has {n} {obj}.",
    "{name} starts the day with {n} {obj}.",
    "{name} has a collection of {n} {obj}.",
    "At first, {name} has {n} {obj}.",
)
# (template, field of the left operand, field of the right operand): operands follow the reading order.
BOX_STARTS: tuple[tuple[str, str, str], ...] = (
    ("{name} has {m} {containers} with {n} {obj} in each {container}.", "m", "n"),
    ("{name} buys {m} {containers} of {obj}, and each {container} holds {n} {obj}.", "m", "n"),
    ("There are {n} {obj} in each of the {m} {containers} that {name} owns.", "n", "m"),
)
COMPARISONS: dict[str, tuple[str, ...]] = {
    "+": ("{other} has {n} more {obj} than {name}.", "{other} owns {n} more {obj} than {name} does."),
    "-": ("{other} has {n} fewer {obj} than {name}.", "{other} owns {n} fewer {obj} than {name} does."),
    "*": ("{other} has {n} times as many {obj} as {name}.", "{other} owns {n} times as many {obj} as {name}."),
}
PRICE_STARTS: tuple[tuple[str, str, str], ...] = (
    ("{name} buys {n} {goods} for {p} {cur} each.", "n", "p"),
    ("{name} buys {n} {goods}, and each one costs {p} {cur}.", "n", "p"),
)
PRICE_FIRST: tuple[str, str] = ("A {good} costs {p} {cur}.", "{name} buys {n} {goods}.")
PAYMENTS: tuple[str, ...] = ("{S} pays with {n} {cur}.", "{S} hands over {n} {cur}.")

COUNT_QUESTIONS: tuple[str, ...] = (
    "How many {obj} does {name} have now?",
    "How many {obj} does {name} have at the end?",
    "How many {obj} does {name} end up with?",
    "In the end, how many {obj} does {name} have?",
)
PAIR_QUESTIONS: tuple[str, ...] = (
    "How many {obj} do {name} and {other} have together?",
    "How many {obj} do {name} and {other} have in total?",
    "Together, how many {obj} do {name} and {other} have?",
)
COST_QUESTIONS: tuple[str, ...] = (
    "How many {cur} does {name} pay?",
    "How much money does {name} spend?",
    "How many {cur} does {name} spend in all?",
)
CHANGE_QUESTIONS: tuple[str, ...] = ("How much change does {name} get?", "How many {cur} does {name} get back?")
DISTRACTORS: tuple[str, ...] = (
    "{name}'s {relative} lives {d} kilometers away.",
    "{stranger} has {d} {other_obj}.",
    "The shop is {d} meters from {name}'s house.",
    "{stranger} is {d} years old.",
    "It takes {name} {d} minutes to walk to school.",
    "{name}'s school has {d} classrooms.",
    "{stranger} reads {d} pages of a book.",
    "There are {d} trees in the park near {name}'s home.",
)


@dataclass(frozen=True)
class Given:
    """A quantity stated in the question: field `field` of `sentence`."""

    sentence: Sentence
    field: str
    value: int


@dataclass(frozen=True)
class Result:
    """The result of solution step `step`."""

    step: int
    value: int


Operand = Given | Result


@dataclass(frozen=True)
class PlannedStep:
    """One solution step `left operation right = value`."""

    left: Operand
    operation: str
    right: Operand
    value: int


def person_forms(person: Person, use_name: bool) -> dict[str, str]:
    """Template values that refer to `person` by pronoun or, when `use_name`, by name."""
    if use_name:
        return {"S": person.name, "s": person.name, "him": person.name, "pos": f"{person.name}'s"}
    return {"S": capitalize(person.subject), "s": person.subject, "him": person.object, "pos": person.possessive}


def operand_choices(operation: str, current: int, split: str, limit: int = MAX_VALUE) -> list[int]:
    """Given quantities that keep `current operation n` exact and within 1..limit."""
    if operation == "+":
        return allowed_quantities(2, min(99, limit - current), split)
    if operation == "-":
        return allowed_quantities(2, min(99, current - 1), split)
    if operation == "*":
        return [k for k in allowed_quantities(2, 13, split) if current * k <= limit]
    return [k for k in allowed_quantities(2, 13, split) if current % k == 0 and current // k >= 2]


class Story:
    """A word problem under construction: its sentences in reading order and its planned solution."""

    def __init__(self, rng: random.Random, split: str, person: Person) -> None:
        self.rng = rng
        self.split = split
        self.person = person
        self.friend = rng.choice([p for p in PEOPLE[split] if p.subject != person.subject])
        self.countable = rng.choice(COUNTABLES)
        self.sentences: list[Sentence] = []
        self.steps: list[PlannedStep] = []
        self.referring: dict[int, Person] = {}  # id(sentence) -> the person its pronouns refer to

    def say(self, template: str, about: Person | None = None, by_name: bool = False, **values: object) -> Sentence:
        """Append a sentence; with `about`, its S/s/him/pos fields name (always if `by_name`) or pronoun them."""
        if about is not None:
            values = {**person_forms(about, use_name=by_name or self.rng.random() < 0.3), **values}
        sentence = Sentence(template, {"obj": self.countable, "friend": self.friend.name, **values})
        self.sentences.append(sentence)
        if about is not None:
            self.referring[id(sentence)] = about
        return sentence

    def pick(self, choices: list[int]) -> int:
        """A random given quantity from `choices` (never empty by construction)."""
        assert choices, "no given quantity fits; the ranges above must leave one"
        return self.rng.choice(choices)

    def compute(self, left: Operand, operation: str, right: Operand) -> Result:
        """Plan the step `left operation right` and return its result."""
        value = OPERATIONS[operation](left.value, right.value)
        assert 1 <= value <= MAX_VALUE and (operation != "/" or left.value % right.value == 0)
        self.steps.append(PlannedStep(left, operation, right, value))
        return Result(len(self.steps) - 1, value)

    def change(
        self,
        current: Operand,
        templates: dict[str, tuple[str, ...]],
        weights: dict[str, int],
        owner: Person | None = None,
        limit: int = MAX_VALUE,
        **values: object,
    ) -> Result:
        """Plan one sentence and step that changes the running quantity `current` of `owner` (default: the
        main person; another owner is always called by name)."""
        feasible = [op for op in weights if operand_choices(op, current.value, self.split, limit)]
        operation = self.rng.choices(feasible, weights=[weights[op] for op in feasible])[0]
        n = self.pick(operand_choices(operation, current.value, self.split, limit))
        extra = self.rng.choice(EXTRAS)
        template = self.rng.choice(templates[operation])
        sentence = self.say(template, about=owner or self.person, by_name=owner is not None, n=n, extra=extra, **values)
        return self.compute(current, operation, Given(sentence, "n", n))


def plan_collection(story: Story, num_steps: int) -> None:
    """A person's count changes `num_steps` times; ask for the final count."""
    n = story.pick(allowed_quantities(5, 99, story.split))
    start = story.say(story.rng.choice(COLLECTION_STARTS), name=story.person.name, n=n)
    current: Operand = Given(start, "n", n)
    for _ in range(num_steps):
        current = story.change(current, COUNT_CHANGES, COUNT_WEIGHTS)
    story.say(story.rng.choice(COUNT_QUESTIONS), name=story.person.name)


def plan_boxes(story: Story, num_steps: int) -> None:
    """Containers times their content, then `num_steps - 1` changes; ask for the final count."""
    template, left, right = story.rng.choice(BOX_STARTS)
    m = story.pick(allowed_quantities(2, 12, story.split))
    n = story.pick([k for k in allowed_quantities(2, 30, story.split) if k * m <= 400])
    container, containers = story.rng.choice(CONTAINERS)
    start = story.say(template, name=story.person.name, m=m, n=n, container=container, containers=containers)
    current: Operand = story.compute(
        Given(start, left, start.values[left]), "*", Given(start, right, start.values[right])
    )
    for _ in range(num_steps - 1):
        current = story.change(current, COUNT_CHANGES, COUNT_WEIGHTS)
    story.say(story.rng.choice(COUNT_QUESTIONS), name=story.person.name)


def plan_pair(story: Story, num_steps: int) -> None:
    """A second person has more / fewer / times as many, then changes; ask for both together."""
    other = story.rng.choice([p for p in PEOPLE[story.split] if p not in (story.person, story.friend)])
    first = story.pick(allowed_quantities(5, 99, story.split))
    start = story.say(story.rng.choice(COLLECTION_STARTS), name=story.person.name, n=first)
    base = Given(start, "n", first)
    limit = MAX_VALUE - first  # the two counts are added at the end
    choices = {op: operand_choices(op, first, story.split, limit) for op in COMPARISONS}
    choices["+"] = [k for k in choices["+"] if k <= 60]
    operation = story.rng.choice([op for op, values in choices.items() if values])
    n = story.pick(choices[operation])
    comparison = story.say(story.rng.choice(COMPARISONS[operation]), name=story.person.name, other=other.name, n=n)
    current: Operand = story.compute(base, operation, Given(comparison, "n", n))
    for _ in range(num_steps - 2):
        current = story.change(current, COUNT_CHANGES, COUNT_WEIGHTS, owner=other, limit=limit)
    story.compute(base, "+", current)
    story.say(story.rng.choice(PAIR_QUESTIONS), name=story.person.name, other=other.name)


def plan_money(story: Story, num_steps: int) -> None:
    """Price times count, then cost changes and maybe paying with a note; ask for the cost or the change."""
    good, goods = story.rng.choice(GOODS)
    currency = story.rng.choice(CURRENCIES)
    with_change = num_steps >= 2 and story.rng.random() < 0.4
    limit = MAX_VALUE - 100 if with_change else MAX_VALUE  # room for a payment above the cost
    p = story.pick(allowed_quantities(2, 40, story.split))
    n = story.pick([k for k in allowed_quantities(2, 12, story.split) if k * p <= limit])
    names = {"name": story.person.name, "good": good, "goods": goods, "cur": currency, "p": p, "n": n}
    if story.rng.random() < 0.4:
        price = story.say(PRICE_FIRST[0], **names)
        count = story.say(PRICE_FIRST[1], **names)
        current: Operand = story.compute(Given(price, "p", p), "*", Given(count, "n", n))
    else:
        template, left, right = story.rng.choice(PRICE_STARTS)
        start = story.say(template, **names)
        current = story.compute(Given(start, left, names[left]), "*", Given(start, right, names[right]))
    for _ in range(num_steps - 1 - with_change):
        current = story.change(current, COST_CHANGES, COST_WEIGHTS, limit=limit, cur=currency)
    if with_change:
        note = story.pick(allowed_quantities(current.value + 1, current.value + 100, story.split))
        payment = story.say(story.rng.choice(PAYMENTS), about=story.person, n=note, cur=currency)
        story.compute(Given(payment, "n", note), "-", current)
        story.say(story.rng.choice(CHANGE_QUESTIONS), name=story.person.name, cur=currency)
    else:
        story.say(story.rng.choice(COST_QUESTIONS), name=story.person.name, cur=currency)


PLANNERS: dict[str, Callable[[Story, int], None]] = {
    "collection": plan_collection,
    "boxes": plan_boxes,
    "pair": plan_pair,
    "money": plan_money,
}


def used_values(story: Story) -> set[int]:
    """Every operand and result of the planned solution."""
    return {value for step in story.steps for value in (step.left.value, step.right.value, step.value)}


def add_distractors(story: Story, count: int) -> list[Sentence]:
    """Insert `count` sentences whose numbers the solution never uses; return them."""
    named = {story.person.name, story.friend.name, *(str(v) for s in story.sentences for v in s.values.values())}
    strangers = [p for p in PEOPLE[story.split] if p.name not in named]
    numbers = [d for d in allowed_quantities(2, 99, story.split) if d not in used_values(story)]
    distractors = []
    for d, template in zip(story.rng.sample(numbers, count), story.rng.sample(DISTRACTORS, count), strict=True):
        other_obj = story.rng.choice([c for c in COUNTABLES if c != story.countable])
        values = {"name": story.person.name, "stranger": story.rng.choice(strangers).name, "d": d}
        values |= {"relative": story.rng.choice(RELATIVES), "other_obj": other_obj}
        distractor = Sentence(template, values)
        story.sentences.insert(story.rng.randrange(len(story.sentences)), distractor)  # never after the question
        distractors.append(distractor)
    return distractors


def name_after_distractors(story: Story, distractors: list[Sentence]) -> None:
    """A pronoun right after a distractor sentence could point at its person: use the name there instead."""
    for previous, sentence in zip(story.sentences, story.sentences[1:], strict=False):
        person = story.referring.get(id(sentence))
        if person is not None and any(previous is d for d in distractors):
            sentence.values.update(person_forms(person, use_name=True))


def operand_dependency(operand: Operand, steps: list[str]) -> Dependency:
    """Where an operand comes from: its span in the question, or the result at the end of an earlier step."""
    if isinstance(operand, Given):
        return Dependency.in_question(operand.sentence.spans[operand.field])
    result = str(operand.value)
    return Dependency.in_step(operand.step, len(steps[operand.step]) - len(result), result)


def render_steps(planned: list[PlannedStep]) -> tuple[list[str], list[list[Dependency]]]:
    """Write each step as "a op b = c" and record the spans of its two operands."""
    steps: list[str] = []
    dependencies: list[list[Dependency]] = []
    for step in planned:
        dependencies.append([operand_dependency(step.left, steps), operand_dependency(step.right, steps)])
        steps.append(f"{step.left.value} {step.operation} {step.right.value} = {step.value}")
    return steps, dependencies


def generate_arithmetic(
    rng: random.Random, split: str = "train", min_steps: int = 2, max_steps: int = 5, family: str | None = None
) -> ReasoningItem:
    """Generate one multi-step arithmetic word problem.

    Args:
        rng: The source of randomness; the item is a pure function of its state.
        split: "train" or "heldout" (disjoint names and given quantities, see `vocab.is_heldout_quantity`).
        min_steps: Fewest solution steps (at least 1).
        max_steps: Most solution steps (at most 8).
        family: One of `FAMILIES` ("collection", "boxes", "pair", "money"); random when None.

    Returns:
        The item; its `meta` holds num_steps, family and the operations in order.

    Raises:
        ValueError: If the split, the step range or the family is invalid.
    """
    validate_split(split)
    if not 1 <= min_steps <= max_steps <= 8:
        raise ValueError(f"Need 1 <= min_steps <= max_steps <= 8, got min_steps={min_steps}, max_steps={max_steps}.")
    if family is not None and family not in FAMILIES:
        raise ValueError(f"Unknown arithmetic family {family!r}: use one of {', '.join(FAMILIES)}.")
    num_steps = rng.randint(min_steps, max_steps)
    family = family or rng.choice([f for f in FAMILIES if f != "pair" or num_steps >= 2])
    if family == "pair" and num_steps < 2:
        raise ValueError("The 'pair' family needs at least 2 steps: raise min_steps.")
    story = Story(rng, split, rng.choice(PEOPLE[split]))
    PLANNERS[family](story, num_steps)
    distractors = add_distractors(story, rng.randint(1, 2))
    name_after_distractors(story, distractors)
    question = join_sentences(story.sentences)
    steps, dependencies = render_steps(story.steps)
    return ReasoningItem(
        id="",
        task="arithmetic",
        split=split,
        question=question,
        steps=steps,
        answer=str(story.steps[-1].value),
        dependencies=dependencies,
        distractors=sorted((d.spans["d"] for d in distractors), key=lambda span: span.start),
        meta={"num_steps": num_steps, "family": family, "operations": [s.operation for s in story.steps]},
    )
