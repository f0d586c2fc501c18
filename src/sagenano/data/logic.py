"""ProofWriter-like deduction: facts and rules about people, a query, closed or open world, proof depth 1–5."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from .schema import Dependency, ReasoningItem, Span, validate_split
from .text import Sentence, SolutionWriter, capitalize, join_sentences
from .vocab import PEOPLE, logic_attributes

WORLDS: tuple[str, ...] = ("closed", "open")
PROOFS: tuple[str, ...] = ("chain", "forward")
ANSWERS: dict[str, tuple[str, ...]] = {"closed": ("True", "False"), "open": ("True", "False", "Unknown")}
QUERIES: tuple[str, ...] = (
    "Is {entity} {attribute}?",
    "Is it true that {entity} is {attribute}?",
    "Based on these facts and rules, is {entity} {attribute}?",
)
WORLD_MARKERS: dict[str, str] = {"closed": "Answer True or False.", "open": "Answer True, False or Unknown."}
NO_PROOF: dict[str, str] = {
    "closed": "No fact or rule proves that {entity} is {attribute}.",
    "open": "No fact or rule proves that {entity} is {attribute} or that {entity} is not {attribute}.",
}
# Rule phrasings. "any" takes one or two conditions of either sign; the others only what their name says.
RULE_TEMPLATES: dict[str, str] = {
    "if_then": "If someone is {conditions} then they are {conclusion}.",
    "people_who": "People who are {conditions} are {conclusion}.",
    "someone_who": "Someone who is {conditions} is {conclusion}.",
    "all_people": "All {first} people are {conclusion}.",  # one positive condition, positive conclusion
    "kind_people": "{First} people are {conclusion}.",  # one positive condition
    "two_adjectives": "{First}, {second} people are {conclusion}.",  # two positive conditions
}
NEGATION_RATE = 0.3  # open world: share of negated facts, conditions and conclusions
CONJUNCTION_RATE = 0.3  # share of chain rules with a second condition
_ATTEMPTS = 500

Property = tuple[str, bool]  # (attribute, holds)


@dataclass(frozen=True)
class Fact:
    """A fact about one person, e.g. "Anne is kind." or "Anne is not kind."."""

    entity: str
    attribute: str
    holds: bool


@dataclass(frozen=True)
class Rule:
    """If all conditions hold for someone, the conclusion holds for them. Conditions are in reading order."""

    conditions: tuple[Property, ...]
    conclusion: Property


@dataclass
class Theory:
    """The facts and rules of one item, which of them the solution uses, and the query."""

    entities: list[str]
    target: str
    query: str
    chain: list[Property]  # the target's properties along the proof chain; chain[-1] is about the query
    used_facts: list[Fact]
    used_rules: list[Rule]
    facts: list[Fact] = field(default_factory=list)  # all facts, used ones included
    rules: list[Rule] = field(default_factory=list)


def property_text(prop: Property) -> str:
    """Render a property as "kind" or "not kind"."""
    return prop[0] if prop[1] else f"not {prop[0]}"


def fact_text(entity: str, prop: Property) -> str:
    """Render a fact as "Anne is kind." or "Anne is not kind."."""
    return f"{entity} is {property_text(prop)}."


def rule_text(rule: Rule, rng: random.Random) -> str:
    """Phrase a rule with a random template that can express it."""
    positive = all(holds for _, holds in rule.conditions)
    names = ["if_then", "people_who", "someone_who"]
    if positive and len(rule.conditions) == 1:
        names += ["kind_people"] + (["all_people"] if rule.conclusion[1] else [])
    if positive and len(rule.conditions) == 2:
        names.append("two_adjectives")
    template = RULE_TEMPLATES[rng.choice(names)]
    first = rule.conditions[0][0]
    second = rule.conditions[-1][0]
    conditions = " and ".join(property_text(prop) for prop in rule.conditions)
    values = {"conditions": conditions, "conclusion": property_text(rule.conclusion), "first": first}
    return template.format(**values, First=capitalize(first), second=second)


def make_rule(conditions: list[Property], conclusion: Property) -> Rule:
    """A rule with its conditions in canonical reading order (positive ones first)."""
    return Rule(tuple(sorted(conditions, key=lambda prop: not prop[1])), conclusion)


def derive(facts: list[Fact], rules: list[Rule], entities: list[str]) -> dict[tuple[str, str, bool], int]:
    """Forward chaining: every derivable (entity, attribute, holds) with its smallest proof depth."""
    depth: dict[tuple[str, str, bool], int] = {(f.entity, f.attribute, f.holds): 0 for f in facts}
    changed = True
    while changed:
        changed = False
        for rule in rules:
            for entity in entities:
                premises = [depth.get((entity, *prop), math.inf) for prop in rule.conditions]
                new_depth = 1 + max(premises)
                key = (entity, *rule.conclusion)
                if new_depth < depth.get(key, math.inf):
                    depth[key] = int(new_depth)
                    changed = True
    return depth


def sample_chain(rng: random.Random, split: str, depth: int, world: str, answer: str, pool: tuple[str, ...]) -> Theory:
    """The target, its proof chain of `depth` rules and the facts it needs (the last conjunct missing when
    the answer is not provable)."""
    entities = [p.name for p in rng.sample(PEOPLE[split], rng.randint(2, 4))]
    target = entities[0]
    attributes = rng.sample(pool, min(len(pool), depth + 8))
    open_world = world == "open"
    provable = answer == "True" or (answer == "False" and open_world)

    def sign() -> bool:
        return not (open_world and rng.random() < NEGATION_RATE)

    final = answer == "True" if provable else sign()
    chain = [(attributes[i], sign()) for i in range(depth)] + [(attributes[depth], final)]
    spare = attributes[depth + 1 :]
    theory = Theory(entities, target, attributes[depth], chain, [Fact(target, *chain[0])], [])
    for i in range(1, depth + 1):
        conditions = [chain[i - 1]]
        missing = not provable and i == depth
        if missing or rng.random() < CONJUNCTION_RATE:
            extra = (spare.pop(rng.randrange(len(spare))), sign())
            conditions.append(extra)
            if missing:  # someone else has the missing property, which tempts a wrong proof
                theory.facts.append(Fact(rng.choice(entities[1:]), *extra))
            else:
                theory.used_facts.append(Fact(target, *extra))
        theory.used_rules.append(make_rule(conditions, chain[i]))
    return theory


def add_distractors(rng: random.Random, theory: Theory, world: str, pool: tuple[str, ...]) -> None:
    """Add facts and rules that the solution does not use, over the chain's attributes and a few others."""
    open_world = world == "open"
    in_chain = {attribute for rule in theory.used_rules for attribute, _ in (*rule.conditions, rule.conclusion)}
    attributes = sorted(in_chain | set(rng.sample(pool, 3)))
    unused = [a for a in attributes if a not in in_chain]

    def sign() -> bool:
        return not (open_world and rng.random() < NEGATION_RATE)

    for _ in range(rng.randint(1, 4)):
        entity = rng.choice(theory.entities)
        pool = unused if entity == theory.target else attributes
        if pool:
            theory.facts.append(Fact(entity, rng.choice(pool), sign()))
    for _ in range(rng.randint(1, 3)):
        conditions = [(a, sign()) for a in rng.sample(attributes, rng.choice((1, 1, 2)))]
        candidates = [a for a in attributes if a not in {c for c, _ in conditions}]
        conclusion = theory.query if rng.random() < 0.4 and theory.query in candidates else rng.choice(candidates)
        theory.rules.append(make_rule(conditions, (conclusion, sign())))
    theory.facts += theory.used_facts
    theory.rules += theory.used_rules


def is_valid(theory: Theory, depth: int, world: str, answer: str) -> bool:
    """Whether the theory has no duplicates or contradictions and gives `answer` at exactly `depth`."""
    distinct_rules = {(frozenset(rule.conditions), rule.conclusion) for rule in theory.rules}
    if len(set(theory.facts)) != len(theory.facts) or len(distinct_rules) != len(theory.rules):
        return False
    if any(rule.conclusion[0] in {a for a, _ in rule.conditions} for rule in theory.rules):
        return False
    derived = derive(theory.facts, theory.rules, theory.entities)
    if any((e, a, not h) in derived for e, a, h in derived):
        return False  # contradictory (possible only in the open world)
    proven_true = derived.get((theory.target, theory.query, True))
    proven_false = derived.get((theory.target, theory.query, False))
    if answer == "True":
        return proven_true == depth
    if answer == "False" and world == "open":
        return proven_false == depth
    return proven_true is None and proven_false is None


def sample_theory(rng: random.Random, split: str, depth: int, world: str, answer: str, pool: tuple[str, ...]) -> Theory:
    """Draw theories until one is valid (the generator's own solver checks it)."""
    for _ in range(_ATTEMPTS):
        theory = sample_chain(rng, split, depth, world, answer, pool)
        add_distractors(rng, theory, world, pool)
        if is_valid(theory, depth, world, answer):
            return theory
    raise AssertionError(f"no valid theory for depth={depth}, world={world}, answer={answer}")


def write_question(rng: random.Random, theory: Theory, world: str) -> tuple[str, dict[object, Sentence]]:
    """Facts, then rules (each shuffled), the query and the world marker; return the question and the
    sentence of each fact, rule and of "query"."""
    facts = rng.sample(theory.facts, len(theory.facts))
    rules = rng.sample(theory.rules, len(theory.rules))
    sentences: dict[object, Sentence] = {
        fact: Sentence(fact_text(fact.entity, (fact.attribute, fact.holds)), {}) for fact in facts
    }
    sentences |= {rule: Sentence(rule_text(rule, rng), {}) for rule in rules}
    sentences["query"] = Sentence(rng.choice(QUERIES), {"entity": theory.target, "attribute": theory.query})
    sentences["world"] = Sentence(WORLD_MARKERS[world], {})
    return join_sentences(list(sentences.values())), sentences


def write_proof(theory: Theory, sentences: dict[object, Sentence], world: str, provable: bool) -> SolutionWriter:
    """One step per rule application ("Anne is kind. If someone is kind then they are smart. So Anne is
    smart."), then, when the query is not provable, a step that says so."""
    writer = SolutionWriter()
    derived: dict[Property, Dependency] = {}  # property of the target -> its conclusion in an earlier step
    rules = theory.used_rules if provable else theory.used_rules[:-1]
    for rule in rules:
        premises = {f"p{k}": fact_text(theory.target, prop) for k, prop in enumerate(rule.conditions)}
        uses = [derived.get(prop) or _question(sentences[Fact(theory.target, *prop)]) for prop in rule.conditions]
        uses.append(_question(sentences[rule]))
        template = " ".join(f"{{{name}}}" for name in premises) + " {rule} So {conclusion}"
        values = {**premises, "rule": sentences[rule].text(), "conclusion": fact_text(theory.target, rule.conclusion)}
        derived[rule.conclusion] = writer.add(template, values, uses)["conclusion"]
    if not provable:  # the last rule needs a property the target lacks
        last = theory.used_rules[-1]
        held = derived.get(theory.chain[-2]) or _question(sentences[Fact(theory.target, *theory.chain[-2])])
        uses = [_question(sentences["query"]), held, _question(sentences[last])]
        writer.add(NO_PROOF[world], {"entity": theory.target, "attribute": theory.query}, uses)
    return writer


def write_forward_proof(theory: Theory, sentences: dict[object, Sentence], world: str) -> SolutionWriter:
    """Forward chaining over the target, one rule per step, rule first ("Tame people are daring. Anne is tame.
    So Anne is daring."): each step applies the first rule of the question whose conditions all hold for the
    target and that concludes something new, until the query or its negation is concluded, or no rule applies
    (then the step that says nothing proves the query). No step needs to know where the proof is going."""
    writer = SolutionWriter()
    known: dict[Property, Dependency] = {
        (fact.attribute, fact.holds): _question(sentences[fact])
        for fact in theory.facts
        if fact.entity == theory.target
    }
    rules = sorted(theory.rules, key=lambda rule: sentences[rule].whole.start)
    query = {(theory.query, True), (theory.query, False)}
    while not query & known.keys():
        rule = next((r for r in rules if r.conclusion not in known and all(c in known for c in r.conditions)), None)
        if rule is None:
            writer.add(NO_PROOF[world], {"entity": theory.target, "attribute": theory.query},
                       [_question(sentences["query"])])  # fmt: skip
            break
        premises = {f"p{k}": fact_text(theory.target, prop) for k, prop in enumerate(rule.conditions)}
        template = "{rule} " + " ".join(f"{{{name}}}" for name in premises) + " So {conclusion}"
        values = {**premises, "rule": sentences[rule].text(), "conclusion": fact_text(theory.target, rule.conclusion)}
        uses = [_question(sentences[rule]), *(known[prop] for prop in rule.conditions)]
        known[rule.conclusion] = writer.add(template, values, uses)["conclusion"]
    return writer


def _question(sentence: Sentence) -> Dependency:
    assert sentence.whole is not None, "join_sentences sets the span of every sentence"
    return Dependency.in_question(sentence.whole)


def unused_sentences(theory: Theory, sentences: dict[object, Sentence], writer: SolutionWriter) -> list[Span]:
    """The fact and rule sentences that no step depends on, in reading order."""
    used = {dep.start for deps in writer.dependencies for dep in deps if dep.source == "question"}
    spans = [sentences[item].whole for item in (*theory.facts, *theory.rules)]
    return sorted((span for span in spans if span is not None and span.start not in used), key=lambda s: s.start)


def generate_logic(
    rng: random.Random,
    split: str = "train",
    min_depth: int = 1,
    max_depth: int = 5,
    world: str | None = None,
    answer: str | None = None,
    attribute_pool: str = "base",
    proof: str = "chain",
) -> ReasoningItem:
    """Generate one deductive-reasoning item with its proof.

    Under the closed world what cannot be proven is False; under the open world the answer is Unknown
    unless the query or its negation is proven (open-world items use negated facts and rules).

    Args:
        rng: The source of randomness; the item is a pure function of its state.
        split: "train" or "heldout" (disjoint names and attributes).
        min_depth: Smallest proof depth (rule applications from the facts to the query), at least 1.
        max_depth: Largest proof depth, at most 5.
        world: "closed" or "open"; random when None.
        answer: "True", "False" or (open world only) "Unknown"; random when None.
        attribute_pool: "base" (28 training attributes) or "wide" (183; training split only, see vocab).
        proof: "chain" (the proof's rules only, from the fact it starts at: choosing that fact needs the whole
            proof in view) or "forward" (the first rule that applies, step after step: `write_forward_proof`).

    Returns:
        The item; its `meta` holds depth, world, num_steps, the query and sentence counts.

    Raises:
        ValueError: If an argument is out of range or unknown.
    """
    validate_split(split)
    pool = logic_attributes(split, attribute_pool)
    if not 1 <= min_depth <= max_depth <= 5:
        raise ValueError(f"Need 1 <= min_depth <= max_depth <= 5, got min_depth={min_depth}, max_depth={max_depth}.")
    if world is not None and world not in WORLDS:
        raise ValueError(f"Unknown world {world!r}: use one of {', '.join(WORLDS)}.")
    if proof not in PROOFS:
        raise ValueError(f"Unknown proof style {proof!r}: use one of {', '.join(PROOFS)}.")
    world = world or rng.choice(WORLDS)
    if answer is not None and answer not in ANSWERS[world]:
        raise ValueError(
            f"Answer {answer!r} is impossible in the {world} world: use one of {', '.join(ANSWERS[world])}."
        )
    answer = answer or rng.choice(ANSWERS[world])
    depth = rng.randint(min_depth, max_depth)
    theory = sample_theory(rng, split, depth, world, answer, pool)
    question, sentences = write_question(rng, theory, world)
    provable = answer == "True" or (answer == "False" and world == "open")
    if proof == "forward":
        writer = write_forward_proof(theory, sentences, world)
    else:
        writer = write_proof(theory, sentences, world, provable)
    distractors = unused_sentences(theory, sentences, writer)
    return ReasoningItem(
        id="",
        task="logic",
        split=split,
        question=question,
        steps=writer.steps,
        answer=answer,
        dependencies=writer.dependencies,
        distractors=distractors,
        meta={
            "depth": depth,
            "world": world,
            "num_steps": len(writer.steps),
            "query": {"entity": theory.target, "attribute": theory.query},
            "num_facts": len(theory.facts),
            "num_rules": len(theory.rules),
            "num_distractors": len(distractors),
            "proof": proof,
        },
    )
