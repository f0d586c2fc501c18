"""Independent checks of reasoning items, from their text alone: spans, arithmetic, equations, choices, proofs.

Nothing here reads a generator's internal state: each item is re-parsed and re-solved from its question and
steps, so a generator bug shows up as a problem instead of being repeated.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from .schema import SOURCES, SPLITS, Dependency, ReasoningItem

_NUMBER = re.compile(r"\d+")


def check_item(item: ReasoningItem) -> list[str]:
    """Check one item.

    Args:
        item: Any reasoning item (e.g. read back from JSONL).

    Returns:
        Human-readable problems; an empty list means the item is valid.
    """
    problems = check_spans(item)
    if item.split not in SPLITS:
        problems.append(f"split {item.split!r} is not one of {', '.join(SPLITS)}")
    if not item.steps or len(item.dependencies) != len(item.steps):
        return [*problems, "the item has no steps"] if not item.steps else problems
    task_checker = TASK_CHECKERS.get(item.task)
    if task_checker is None:
        return [*problems, f"unknown task {item.task!r}: known tasks are {', '.join(TASK_CHECKERS)}"]
    return problems + task_checker(item)


# --- spans -------------------------------------------------------------------------------------------------


def check_spans(item: ReasoningItem) -> list[str]:
    """Every dependency and distractor span must point at exactly its text; distractors are never dependencies."""
    problems: list[str] = []
    if len(item.dependencies) != len(item.steps):
        problems.append(f"{len(item.dependencies)} dependency lists for {len(item.steps)} steps")
    for index, spans in enumerate(item.dependencies):
        for span in spans:
            problems += [f"step {index}: {problem}" for problem in _dependency_problems(item, index, span)]
    used = [(d.start, d.end) for spans in item.dependencies for d in spans if d.source == "question"]
    for span in item.distractors:
        if not 0 <= span.start <= span.end <= len(item.question) or item.question[span.start : span.end] != span.text:
            problems.append(f"distractor span [{span.start}, {span.end}) does not hold {span.text!r}")
        if any(start < span.end and span.start < end for start, end in used):
            problems.append(f"distractor {span.text!r} overlaps a dependency span")
    return problems


def _dependency_problems(item: ReasoningItem, index: int, span: Dependency) -> list[str]:
    if span.source not in SOURCES:
        return [f"dependency source {span.source!r} is not one of {', '.join(SOURCES)}"]
    if span.source == "question":
        if span.step is not None:
            return [f"question dependency {span.text!r} names step {span.step}"]
        text = item.question
    else:
        if not isinstance(span.step, int) or not 0 <= span.step < min(index, len(item.steps)):
            return [f"dependency {span.text!r} names step {span.step}, which is not an earlier step"]
        text = item.steps[span.step]
    if not 0 <= span.start < span.end <= len(text) or text[span.start : span.end] != span.text:
        return [f"{span.source} span [{span.start}, {span.end}) does not hold {span.text!r}"]
    return []


def _numbers_in_dependencies(item: ReasoningItem, index: int) -> Counter[int]:
    return Counter(int(n) for span in item.dependencies[index] for n in _NUMBER.findall(span.text))


def _missing_numbers(item: ReasoningItem, index: int, used: list[int]) -> list[str]:
    missing = Counter(used) - _numbers_in_dependencies(item, index)
    return [f"step {index} uses {n}, which none of its dependency spans holds" for n in sorted(missing)]


# --- arithmetic --------------------------------------------------------------------------------------------

_BINARY_STEP = re.compile(r"^(\d+) ([-+*/]) (\d+) = (\d+)$")


def evaluate(left: int, operation: str, right: int) -> int | None:
    """`left operation right` on integers; None when a division is not exact."""
    if operation == "+":
        return left + right
    if operation == "-":
        return left - right
    if operation == "*":
        return left * right
    return left // right if right and left % right == 0 else None


def check_arithmetic(item: ReasoningItem) -> list[str]:
    """Each step is "a op b = c" and holds, its operands are in its dependency spans, the last c is the answer."""
    problems: list[str] = []
    result: int | None = None
    for index, step in enumerate(item.steps):
        match = _BINARY_STEP.match(step)
        if not match:
            problems.append(f"step {index} {step!r} is not of the form 'a op b = c'")
            result = None
            continue
        left, operation, right, result = int(match[1]), match[2], int(match[3]), int(match[4])
        if evaluate(left, operation, right) != result:
            problems.append(f"step {index} {step!r} is wrong")
        problems += _missing_numbers(item, index, [left, right])
    if result is not None and item.answer != str(result):
        problems.append(f"answer {item.answer!r} is not the last result {result}")
    return problems


# --- linear equations --------------------------------------------------------------------------------------

_SIDE = r"\d*(?:[a-z]|\([a-z] [-+] \d+\))(?: [-+] \d+)?|\d+"
_EQUATION = re.compile(rf"(?<![\w(])({_SIDE}) = ({_SIDE})(?![\w)])")
_TERM = re.compile(r"^(\d*)([a-z])(?: ([-+]) (\d+))?$")
_GROUP = re.compile(r"^(\d*)\(([a-z]) ([-+]) (\d+)\)$")
_COLLECT = re.compile(r"^(\d*)([a-z]) - (\d*)([a-z])$")

Linear = tuple[int, int, str | None]  # coefficient, constant, variable: coefficient·variable + constant


def parse_linear(text: str) -> Linear | None:
    """Parse "3x + 2", "x", "3(x - 2)", "12" or "5x - 2x" into (coefficient, constant, variable)."""
    if text.isdigit():
        return 0, int(text), None
    if match := _TERM.match(text):
        constant = int(match[4] or 0) * (-1 if match[3] == "-" else 1)
        return int(match[1] or 1), constant, match[2]
    if match := _GROUP.match(text):
        coefficient = int(match[1] or 1)
        return coefficient, coefficient * int(match[4]) * (-1 if match[3] == "-" else 1), match[2]
    if (match := _COLLECT.match(text)) and match[2] == match[4]:
        return int(match[1] or 1) - int(match[3] or 1), 0, match[2]
    return None


def value_at(expression: Linear, x: int) -> int:
    """The value of a parsed linear expression at `x`."""
    return expression[0] * x + expression[1]


def check_linear_equation(item: ReasoningItem) -> list[str]:
    """The answer solves the question's equation; each step is exact, true at the answer, and uses only
    numbers of its dependency spans; the last step reads "x = ... = answer"."""
    match = _EQUATION.search(item.question)
    if not match:
        return ["no linear equation found in the question"]
    left, right = parse_linear(match[1]), parse_linear(match[2])
    if left is None or right is None or not item.answer.lstrip("-").isdigit():
        return [f"cannot read the equation {match[0]!r} or the answer {item.answer!r}"]
    variable = left[2] or right[2]
    x = int(item.answer)
    problems = []
    if left[0] == right[0]:
        problems.append(f"the equation {match[0]!r} has no unique solution")
    if value_at(left, x) != value_at(right, x):
        problems.append(f"{variable} = {x} does not solve {match[0]!r}")
    for index, step in enumerate(item.steps):
        problems += _linear_step_problems(item, index, step, variable, x)
    last = item.steps[-1].split(" = ")
    if last[0] != variable or last[-1] != item.answer:
        problems.append(f"the last step {item.steps[-1]!r} does not conclude {variable} = {item.answer}")
    return problems


def _linear_step_problems(item: ReasoningItem, index: int, step: str, variable: str | None, x: int) -> list[str]:
    parts = step.split(" = ")
    if len(parts) == 2:  # "5x - 2x = 3x": collecting the unknown
        left, right = parse_linear(parts[0]), parse_linear(parts[1])
        if left is None or right is None or left[2] != variable or right[2] != variable or left[:2] != right[:2]:
            return [f"step {index} {step!r} is not a correct collection of {variable}"]
        return _missing_numbers(item, index, [int(n) for n in _NUMBER.findall(parts[0])])
    match = _BINARY_STEP.match(" = ".join(parts[1:])) if len(parts) == 3 else None
    lhs = parse_linear(parts[0])
    if not match or lhs is None or lhs[2] != variable:
        return [f"step {index} {step!r} is not of the form '<expression> = a op b = c'"]
    problems = []
    if evaluate(int(match[1]), match[2], int(match[3])) != int(match[4]):
        problems.append(f"step {index} {step!r} computes wrongly")
    if value_at(lhs, x) != int(match[4]):
        problems.append(f"step {index} {step!r} is false at {variable} = {x}")
    used = [int(n) for n in _NUMBER.findall(parts[0])] + [int(match[1]), int(match[3])]
    return problems + _missing_numbers(item, index, used)


# --- multiple choice ---------------------------------------------------------------------------------------

_OPTIONS = re.compile(r" Options: A\) (\d+) B\) (\d+) C\) (\d+) D\) (\d+) E\) (\d+)$")
_FINAL = re.compile(r"^(?:Compare (\d+) with the options: (.*)\. )?The answer is (\d+), which is option ([A-E])\.$")
_VERDICT = re.compile(r"([A-E])\) (\d+) (yes|no)")


def check_multiple_choice(item: ReasoningItem) -> list[str]:
    """The base solution is valid, its value is exactly one option, that option's letter is the answer, and a
    last step that walks the options walks them up to that one with the right verdicts."""
    options = _OPTIONS.search(item.question)
    final = _FINAL.match(item.steps[-1])
    if not options or not final or len(item.steps) < 2:
        return [
            "expected ' Options: A) .. E) ..' after the question and a last step 'The answer is N, which is option "
            "L.', or 'Compare N with the options: A) .. no, ... L) N yes. The answer is N, which is option L.'"
        ]
    values = dict(zip("ABCDE", (int(v) for v in options.groups()), strict=True))
    value, letter = int(final[3]), final[4]
    base_steps = item.steps[:-1]
    base_task = "arithmetic" if all(_BINARY_STEP.match(step) for step in base_steps) else "linear_equation"
    base = replace(
        item,
        task=base_task,
        question=item.question[: options.start()],
        steps=base_steps,
        answer=str(value),
        dependencies=item.dependencies[:-1],
        distractors=[],
    )
    problems = [f"base {base_task}: {problem}" for problem in TASK_CHECKERS[base_task](base)]
    if len(set(values.values())) != 5:
        problems.append("the five options are not distinct")
    matching = [key for key, option in values.items() if option == value]
    if matching != [letter]:
        problems.append(f"the solved value {value} is option(s) {matching}, but the last step names {letter}")
    if item.answer != letter:
        problems.append(f"answer {item.answer!r} is not the letter {letter} of the solved value")
    if final[1] is not None:
        problems += _walk_problems(final[2], values, int(final[1]), value, letter)
    if f"{letter}) {value}" not in {span.text for span in item.dependencies[-1]}:
        problems.append(f"the last step does not depend on the option span '{letter}) {value}'")
    return problems


def _walk_problems(walk: str, values: dict[str, int], compared: int, value: int, letter: str) -> list[str]:
    """What is wrong with "A) 15 no, B) 12 yes": the options in order up to `letter`, each copied as the
    question has it and judged against the solved value."""
    verdicts = [(key, int(option), verdict) for key, option, verdict in _VERDICT.findall(walk)]
    expected = [
        (key, values[key], "yes" if values[key] == value else "no") for key in "ABCDE"[: "ABCDE".index(letter) + 1]
    ]
    problems = [f"the walk compares {compared}, not the solved value {value}"] if compared != value else []
    if verdicts != expected or ", ".join(f"{k}) {v} {y}" for k, v, y in verdicts) != walk:
        problems.append(
            f"the walk over the options is {walk!r}, expected the options A to {letter} with their verdicts"
        )
    return problems


# --- logic -------------------------------------------------------------------------------------------------

_NAME = r"[A-Z][a-z]+"
_PROPERTY = r"(?:not )?[a-z]+"
_CONDITIONS = rf"({_PROPERTY}(?: and {_PROPERTY})?)"
_FACT = re.compile(rf"^({_NAME}) is ({_PROPERTY})\.$")
_RULE_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(rf"^If someone is {_CONDITIONS} then they are ({_PROPERTY})\.$"),
    re.compile(rf"^People who are {_CONDITIONS} are ({_PROPERTY})\.$"),
    re.compile(rf"^Someone who is {_CONDITIONS} is ({_PROPERTY})\.$"),
    re.compile(r"^All ([a-z]+) people are ([a-z]+)\.$"),
    re.compile(rf"^({_NAME}) people are ({_PROPERTY})\.$"),
    re.compile(rf"^({_NAME}), ([a-z]+) people are ({_PROPERTY})\.$"),
)
_QUERY_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(rf"^Is ({_NAME}) ([a-z]+)\?$"),
    re.compile(rf"^Is it true that ({_NAME}) is ([a-z]+)\?$"),
    re.compile(rf"^Based on these facts and rules, is ({_NAME}) ([a-z]+)\?$"),
)
_WORLDS = {"Answer True or False.": "closed", "Answer True, False or Unknown.": "open"}
CONCLUSION = re.compile(rf"^So ({_NAME}) is ({_PROPERTY})\.$")
SENTENCE_END = re.compile(r"(?<=[.?])\s+")

Atom = tuple[str, bool]  # (attribute, holds)
LogicRule = tuple[frozenset[Atom], Atom]


def parse_atom(text: str) -> Atom:
    return (text[4:], False) if text.startswith("not ") else (text, True)


def parse_rule(sentence: str) -> LogicRule | None:
    """Parse one rule sentence into (conditions, conclusion); None if it is not a rule."""
    for number, pattern in enumerate(_RULE_PATTERNS):
        match = pattern.match(sentence)
        if not match:
            continue
        if number < 3:
            conditions = [parse_atom(part) for part in match[1].split(" and ")]
        else:
            conditions = [(word.lower(), True) for word in match.groups()[:-1]]
        return frozenset(conditions), parse_atom(match.groups()[-1])
    return None


def parse_fact(sentence: str) -> tuple[str, Atom] | None:
    """Parse "Anne is (not) kind." into (entity, atom)."""
    match = _FACT.match(sentence)
    return (match[1], parse_atom(match[2])) if match else None


class ParsedTheory:
    """Facts, rules, query and world assumption read back from a logic question."""

    def __init__(self, question: str) -> None:
        self.problems: list[str] = []
        self.facts: set[tuple[str, str, bool]] = set()
        self.rules: list[LogicRule] = []
        self.rule_sentences: set[str] = set()
        self.query: tuple[str, str] | None = None
        self.world: str | None = None
        for sentence in SENTENCE_END.split(question.strip()):
            self._read(sentence)
        if self.query is None or self.world is None:
            self.problems.append("the question has no query or no 'Answer True ...' sentence")

    def _read(self, sentence: str) -> None:
        if sentence in _WORLDS:
            self.world = _WORLDS[sentence]
        elif fact := parse_fact(sentence):
            self.facts.add((fact[0], *fact[1]))
        elif rule := parse_rule(sentence):
            self.rules.append(rule)
            self.rule_sentences.add(sentence)
        elif query := next((m for p in _QUERY_PATTERNS if (m := p.match(sentence))), None):
            self.query = (query[1], query[2])
        else:
            self.problems.append(f"cannot read the sentence {sentence!r}")

    def closure(self) -> set[tuple[str, str, bool]]:
        """Everything the facts and rules prove, by forward chaining to a fixed point."""
        known = set(self.facts)
        entities = {entity for entity, _, _ in known} | ({self.query[0]} if self.query else set())
        changed = True
        while changed:
            changed = False
            for conditions, (attribute, holds) in self.rules:
                for entity in entities:
                    new = (entity, attribute, holds)
                    if new not in known and all((entity, *atom) in known for atom in conditions):
                        known.add(new)
                        changed = True
        return known

    def states_negation(self) -> bool:
        """Whether any fact or rule is negative (which a closed-world question must not have)."""
        atoms = [(a, h) for _, a, h in self.facts] + [
            a for conditions, result in self.rules for a in (*conditions, result)
        ]
        return any(not holds for _, holds in atoms)

    def solve(self) -> tuple[str, list[str]]:
        """The answer under the stated world assumption, and any inconsistency found."""
        known = self.closure()
        entity, attribute = self.query or ("", "")
        if self.world == "closed":
            answer = "True" if (entity, attribute, True) in known else "False"
            return answer, ["a closed-world question states a negation"] if self.states_negation() else []
        contradictions = sorted({f"{e} is both {a} and not {a}" for e, a, h in known if (e, a, not h) in known})
        if (entity, attribute, True) in known:
            return "True", contradictions
        return ("False" if (entity, attribute, False) in known else "Unknown"), contradictions


def check_logic(item: ReasoningItem) -> list[str]:
    """Re-derive the answer with an independent forward-chaining solver and check each proof step."""
    theory = ParsedTheory(item.question)
    if theory.problems:
        return theory.problems
    answer, problems = theory.solve()
    if answer != item.answer:
        problems.append(f"the {theory.world}-world answer is {answer}, not {item.answer!r}")
    concluded: dict[int, tuple[str, str, bool]] = {}
    for index, step in enumerate(item.steps):
        if step.startswith("No fact or rule proves"):
            problems += _no_proof_problems(theory, answer, index, step, last=index == len(item.steps) - 1)
        else:
            problems += _derivation_problems(item, theory, index, step, concluded)
    entity, attribute = theory.query or ("", "")
    proven = None if answer == "Unknown" or (answer == "False" and theory.world == "closed") else answer == "True"
    last = len(item.steps) - 1
    if proven is not None and concluded.get(last) != (entity, attribute, proven):
        problems.append(f"the last step does not conclude that {entity} is {'' if proven else 'not '}{attribute}")
    if proven is None and last not in concluded and not item.steps[last].startswith("No fact or rule proves"):
        problems.append("the last step should say that no fact or rule proves the query")
    return problems


def _no_proof_problems(theory: ParsedTheory, answer: str, index: int, step: str, last: bool) -> list[str]:
    entity, attribute = theory.query or ("", "")
    expected = f"No fact or rule proves that {entity} is {attribute}."
    if theory.world == "open":
        expected = f"No fact or rule proves that {entity} is {attribute} or that {entity} is not {attribute}."
    problems = [] if step == expected else [f"step {index} should read {expected!r}"]
    if not last:
        problems.append(f"step {index} says nothing is proven but is not the last step")
    if answer == "True" or (answer == "False" and theory.world == "open"):
        problems.append(f"step {index} says nothing is proven, but the answer is {answer}")
    return problems


def _derivation_problems(
    item: ReasoningItem, theory: ParsedTheory, index: int, step: str, concluded: dict[int, tuple[str, str, bool]]
) -> list[str]:
    """A derivation step: "Anne is kind. <a rule of the question> So Anne is smart." whose premises are facts
    or earlier conclusions, whose rule fits them, and whose dependencies are exactly its premises and rule."""
    *premises, last_sentence = SENTENCE_END.split(step)
    conclusion = CONCLUSION.match(last_sentence)
    rules = [sentence for sentence in premises if sentence in theory.rule_sentences]
    facts = [parse_fact(sentence) for sentence in premises if sentence not in theory.rule_sentences]
    if not conclusion or len(rules) != 1 or not all(facts):
        return [f"step {index} {step!r} is not 'premises. rule. So X is Y.'"]
    entity, atom = conclusion[1], parse_atom(conclusion[2])
    conditions, result = parse_rule(rules[0]) or (frozenset(), ("", True))
    available = theory.facts | set(concluded.values())
    concluded[index] = (entity, *atom)
    problems = []
    for fact_entity, fact_atom in filter(None, facts):
        if fact_entity != entity or (entity, *fact_atom) not in available:
            problems.append(f"step {index} uses '{fact_entity} is ...', which is neither a fact nor proven before")
    if {fact_atom for _, fact_atom in filter(None, facts)} != conditions or result != atom:
        problems.append(f"step {index} does not apply its rule correctly")
    if Counter(span.text for span in item.dependencies[index]) != Counter(premises):
        problems.append(f"step {index} dependencies do not match its premises and rule")
    for span in item.dependencies[index]:
        fact = parse_fact(span.text)
        if span.source == "step" and (fact is None or concluded.get(span.step) != (fact[0], *fact[1])):
            problems.append(f"step {index} depends on {span.text!r} in step {span.step}, which did not conclude it")
    return problems


TASK_CHECKERS: dict[str, Callable[[ReasoningItem], list[str]]] = {
    "arithmetic": check_arithmetic,
    "linear_equation": check_linear_equation,
    "multiple_choice": check_multiple_choice,
    "logic": check_logic,
}
