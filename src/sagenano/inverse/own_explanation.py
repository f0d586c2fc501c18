"""A SAGE model's own explanation (stage 3): what it learns to write, how it is read, and how it is checked.

After `<|explanation|>` a SAGE model trained with stage 3 writes a few sentences about *this* chain. Stage 3 teaches
them from the engine's measurements of the model's own chains (`target_text`, from a validated report): the decision
points whose alternatives changed the answer and whose causal claim held, each step's top-ranked dependency that held
under masking, and the least confident step. Each such sentence the model writes becomes a claim
(`own_claims`), checked by the same interventions as the engine's own claims; a sentence that names nothing in the
chain is refuted as written.
"""

from __future__ import annotations

import json
import re

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data.format import ANSWER, EXPLANATION, QUESTION, STEP
from ..decoding import Chain, context_length, eos_ids
from ..generation import ReasoningTrace
from ..lookup_decoding import lookup_greedy
from .report import Claim, OwnExplanation, Report

MAX_DECISIONS = 2  # decision points a target explanation names
MAX_DEPENDENCIES = 4  # dependencies a target explanation names (one per step, the first steps)
MAX_TOKENS = 128  # tokens a model may write after `<|explanation|>`
_FORMAT_TOKENS = [STEP, ANSWER, QUESTION, EXPLANATION]

# The sentences, with their quoted parts as JSON strings (tokens and spans may hold quotes and spaces).
_QUOTED = r'("(?:[^"\\]|\\.)*")'
DECIDED = "Step {step} decided the answer: {alternative} instead of {chosen} changes it."
RESTS_ON = "Step {step} rests on {span}."
LEAST_CONFIDENT = "Least confident step: {step} (p={prob:.2f})."
_DECIDED = re.compile(rf"Step (\d+) decided the answer: {_QUOTED} instead of {_QUOTED} changes it\.")
_RESTS_ON = re.compile(rf"Step (\d+) rests on {_QUOTED}\.")
_LEAST_CONFIDENT = re.compile(r"Least confident step: (\d+) \(p=([0-9.]+)\)\.")


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


# --- what stage 3 teaches ---------------------------------------------------------------------------------


def target_text(report: Report) -> str:
    """The explanation a model should write about the report's chain, made only of what held when the engine
    checked it (`report` validated and refined): verified decision points, each step's dependency that held,
    the least confident reasoning step. Empty when nothing was measured."""
    return " ".join([*_decision_sentences(report), *_dependency_sentences(report), *_confidence_sentence(report)])


def _decision_sentences(report: Report) -> list[str]:
    verified = {
        c.stated["position"]
        for c in report.claims
        if c.kind == "decision" and c.category == "causal" and c.status == "verified" and c.author == "engine"
    }
    sentences = []
    for point in report.decision_points:
        changing = [a for a in point.alternatives if a.outcome != "same_answer"]
        if point.position in verified and point.step is not None and changing:
            alternative, chosen = _quote(changing[0].token), _quote(point.token)
            sentences.append(DECIDED.format(step=point.step + 1, alternative=alternative, chosen=chosen))
    return sentences[:MAX_DECISIONS]


def _dependency_sentences(report: Report) -> list[str]:
    """Step by step, in order (a regular shape is easier to learn than the strongest few), the top-ranked span whose
    dependency claim held; the answer counts as a step."""
    held: dict[int, Claim] = {}
    for claim in report.claims:
        if claim.kind == "dependency" and claim.status == "verified" and claim.author == "engine":
            held.setdefault(claim.step, claim)
    return [RESTS_ON.format(step=k + 1, span=_quote(held[k].stated["text"])) for k in sorted(held)][:MAX_DEPENDENCIES]


def _confidence_sentence(report: Report) -> list[str]:
    reasoning = [s for s in report.steps if not s.is_answer]
    if not reasoning:
        return []
    weakest = min(reasoning, key=lambda s: s.confidence)
    return [LEAST_CONFIDENT.format(step=weakest.index + 1, prob=weakest.confidence)]


def example_texts() -> list[str]:
    """Sentences of the format, for lookup decoding's drafts (`lookup_decoding`): the model copies the rest (tokens,
    spans) from its chain."""
    return [
        DECIDED.format(step=2, alternative=_quote(" 7"), chosen=_quote(" 3")),
        RESTS_ON.format(step=3, span=_quote(" 16 + 16")),
        LEAST_CONFIDENT.format(step=1, prob=0.9),
    ]


def explanation_pool(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    return [i for text in example_texts() for i in tokenizer(text, add_special_tokens=False).input_ids]


# --- what the model wrote ---------------------------------------------------------------------------------


def read_own_explanation(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    chain: Chain,
    trace: ReasoningTrace,
    report: Report,
    cache=None,
) -> None:
    """The explanation the model writes after `<|explanation|>` (already in the chain, or asked for), into
    `report.own_explanation`, and its checkable sentences into `report.claims`."""
    if EXPLANATION in trace.text:
        at = trace.text.index(EXPLANATION) + len(EXPLANATION)
        starts = [0, *trace.token_char_ends[:-1]]
        tokens = [t for t in range(trace.num_tokens) if starts[t] >= at]
        text = trace.text[at:]
        probs = trace.logprobs[tokens].exp().tolist()
    else:
        text, probs = _ask_for_explanation(model, tokenizer, chain, cache)
    if text.strip():
        report.own_explanation = OwnExplanation(text=text.strip(), mean_prob=sum(probs) / max(len(probs), 1))
        report.claims.extend(own_claims(report, tokenizer))


def _ask_for_explanation(model, tokenizer, chain: Chain, cache=None) -> tuple[str, list[float]]:
    """Greedy decoding after the marker. Lookup decoding drafts from the chain and from examples of the format: the
    same text as `generate` (tests/test_lookup_decoding.py) in fewer forward passes. `cache`: the keys and values of
    the chain's inputs (the scoring pass's), a prefix of what is decoded from."""
    explanation_id = tokenizer.convert_tokens_to_ids(EXPLANATION)
    if explanation_id is None or explanation_id == tokenizer.unk_token_id:
        return "", []
    eos = eos_ids(model)
    ids = chain.token_ids.tolist()
    if ids and ids[-1] in eos:
        ids = ids[:-1]
    prefix = [*chain.prompt_ids.tolist(), *ids, explanation_id]
    room = min(MAX_TOKENS, (context_length(model) or 10**9) - len(prefix))
    if room < 1:
        return "", []
    # The explanation ends at end-of-sequence, or where the model starts a step, an answer or a question again
    # (that text is not part of it).
    stops = eos | {i for i in tokenizer.convert_tokens_to_ids(_FORMAT_TOKENS) if i != tokenizer.unk_token_id}
    new, probs = lookup_greedy(model, prefix, room, stops, explanation_pool(tokenizer), cache=cache)
    if new and new[-1] in stops:
        new, probs = new[:-1], probs[:-1]
    return tokenizer.decode(new), probs


# --- its claims ---------------------------------------------------------------------------------------------


def own_claims(report: Report, tokenizer: PreTrainedTokenizerBase) -> list[Claim]:
    """Each checkable sentence of the report's own explanation as a claim (author "model"), in the order written."""
    if report.own_explanation is None:
        return []
    text = report.own_explanation.text
    found = [
        *((m.start(), _decision_claim(report, tokenizer, m)) for m in _DECIDED.finditer(text)),
        *((m.start(), _dependency_claim(report, m)) for m in _RESTS_ON.finditer(text)),
        *((m.start(), _confidence_claim(m)) for m in _LEAST_CONFIDENT.finditer(text)),
    ]
    claims = [claim for _, claim in sorted(found, key=lambda pair: pair[0])]
    for number, claim in enumerate(claims, 1):
        claim.id = f"own-{number}-{claim.kind}"
    return claims


def _step_of(report: Report, number: str):
    return next((s for s in report.steps if s.index == int(number) - 1), None)


def _decision_claim(report: Report, tokenizer, match: re.Match) -> Claim:
    """ "Step k decided the answer: A instead of C changes it": at the token C of step k (its least probable
    occurrence, the closest call), continuations sampled after A end elsewhere far more often than after C."""
    alternative, chosen = json.loads(match.group(2)), json.loads(match.group(3))
    statement = (
        f"The model's own explanation: writing {alternative!r} instead of {chosen!r} in step {match.group(1)} "
        "would change the answer."
    )
    stated = {"alternative": alternative, "chosen": chosen}
    step = _step_of(report, match.group(1))
    if step is None:
        return _unlocated("decision", None, statement, stated, f"the chain has no step {match.group(1)}")
    occurrences = [t for t in report.tokens[step.token_start : step.token_end] if t.token == chosen]
    if not occurrences:
        return _unlocated("decision", step.index, statement, stated, f"step {step.index + 1} has no token {chosen!r}")
    alternative_ids = tokenizer(alternative, add_special_tokens=False).input_ids
    if len(alternative_ids) != 1:
        return _unlocated("decision", step.index, statement, stated, f"{alternative!r} is not one token")
    closest = min(occurrences, key=lambda t: t.prob)
    return Claim(
        id="",
        kind="decision",
        category="causal",
        author="model",
        step=step.index,
        statement=statement,
        stated={**stated, "position": closest.index, "changing_token_ids": alternative_ids},
    )


def _dependency_claim(report: Report, match: re.Match) -> Claim:
    """ "Step k rests on S": S is one of the spans the engine ranked for step k, and masking it changes the step
    more than masking random spans of its length."""
    text = json.loads(match.group(2))
    statement = f"The model's own explanation: step {match.group(1)} rests on {text!r}."
    step = _step_of(report, match.group(1))
    if step is None:
        return _unlocated("dependency", None, statement, {"text": text}, f"the chain has no step {match.group(1)}")
    span = next((d.span for d in step.dependencies if d.span.text.strip() == text.strip()), None)
    if span is None:
        reason = f"no span before step {step.index + 1} reads {text!r}"
        return _unlocated("dependency", step.index, statement, {"text": text}, reason)
    stated = {"positions": span.positions, "text": span.text}
    return Claim(id="", kind="dependency", author="model", step=step.index, statement=statement, stated=stated)


def _confidence_claim(match: re.Match) -> Claim:
    step, prob = int(match.group(1)) - 1, float(match.group(2))
    return Claim(
        id="",
        kind="confidence",
        author="model",
        step=step,
        statement=f"The model's own explanation: its least confident step is step {step + 1} (p={prob:.2f}).",
        stated={"least_confident_step": step, "prob": prob},
    )


def _unlocated(kind: str, step: int | None, statement: str, stated: dict, reason: str) -> Claim:
    """A sentence that names nothing in this chain: refuted as written (validation leaves it so)."""
    category = "causal" if kind in ("decision", "dependency") else None
    return Claim(
        id="",
        kind=kind,
        category=category,
        author="model",
        step=step,
        statement=statement,
        stated={**stated, "unlocated": reason},
        check=reason,
        status="refuted",
    )
