"""ValidateConsistency and RefineExplanation: every claim checked on the model.

Causal claims (an intervention could refute them; the headline score counts only these):
- decision claims (a rolled-out decision point: "the answer depends on this choice"): continuations sampled from the
  model after one of the alternatives that changed the answer must end elsewhere (another answer, or none) in a share
  at least `DECISION_SHIFT` larger than continuations sampled after the chosen token;
- alternative claims: continuations sampled after the forced token must mostly end as stated (same answer, another
  answer, none), and a teacher-forced pass must confirm that the greedy rollout is what greedy decoding gives, every
  token a most likely one (the engine generated it in a batch of branches; the check feeds each rollout at once);
- dependency claims: replacing the claimed span's tokens (masking) must raise the step's negative log-likelihood more
  than replacing random spans of the same number of tokens typically does (their median: one random span that
  happens to hit the step's own cue must not decide the verdict).

Consistency checks (a number read again by another path): confidences (the report's come from cached generation,
the check's from an uncached teacher-forced pass), and a decision point that was not rolled out (its probability the
same way; its score is only read again from the scoring pass it was made from).

RefineExplanation: refuted claims leave the explanation (they are listed as refuted, never shown as facts), and a
refuted dependency is replaced by the next-ranked span of the same step that passes the masking test. A SAGE model's
own sentences (`own_explanation`) are checked the same way; when refuted they leave the claims and change nothing
else. The score is the share of causal claims that held as first stated.
"""

from __future__ import annotations

import random
import statistics

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache, DynamicLayer

from ..decoding import (
    Chain,
    cache_of,
    consecutive_batches,
    context_length,
    eos_ids,
    inputs_after_cache,
    kv_cache_bytes_per_token,
    left_padded_states,
    padded_batch,
    plain_cache,
)
from .alternatives import chain_end, decode_chain, sampled_answers
from .answers import changes_answer, extract_answer, outcome
from .claims import dependency_claim
from .decisions import TokenUncertainty, decision_scores
from .measure import ROWS_PER_PASS, Scores, masked_step_losses, replacement_id, score_chain
from .report import Claim, Report, Validation

PROB_TOLERANCE = 0.02  # stated probabilities are rounded to 3 decimals; cached vs uncached passes differ ~1e-6
REPAIR_CANDIDATES = 3  # next-ranked spans tested for a refuted dependency
DECISION_SHIFT = 0.5  # how much more often the answer must change after an alternative than after the chosen token


def validate(
    report: Report, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, scores: Scores | None = None
) -> Validation:
    """Checks every claim of the report on the model, sets each claim's status and evidence, and scores.

    `scores`: an uncached teacher-forced pass over the report's chain, when the caller has one (`explain` scored
    the chain that way before stating anything); None: measured here."""
    model.eval()
    chain = Chain.from_report(report)
    if scores is None:
        scores = score_chain(model, chain, [], temperature=report.token_temperature)
    # A sentence of the model's own explanation that names nothing in the chain was refuted as read.
    checkable = [c for c in report.claims if "unlocated" not in c.stated]
    for claim in checkable:
        if claim.kind == "confidence":
            _check_confidence(claim, report, scores)
        elif claim.kind == "decision" and claim.category == "consistency":
            _check_decision_score(claim, report, scores)
    sampled = [c for c in checkable if c.kind in ("decision", "alternative") and c.category == "causal"]
    answers = _sampled_answers(sampled, report, model, tokenizer, chain, scores.cache)
    for claim in sampled:
        if claim.kind == "decision":
            _check_decision(claim, report, answers)
    _check_alternatives([c for c in checkable if c.kind == "alternative"], report, model, tokenizer, chain, answers)
    _check_dependencies([c for c in checkable if c.kind == "dependency"], report, model, tokenizer, chain, scores)
    return _score(report.claims, report.options.refine_below)


def _score(claims: list[Claim], threshold: float) -> Validation:
    causal = [c for c in claims if c.category == "causal"]
    consistency = [c for c in claims if c.category == "consistency"]
    verified = sum(c.status == "verified" for c in causal)
    return Validation(
        score=verified / len(causal) if causal else 1.0,
        verified=verified,
        refuted=sum(c.status == "refuted" for c in causal),
        total=len(causal),
        consistency_passed=sum(c.status == "verified" for c in consistency),
        consistency_total=len(consistency),
        threshold=threshold,
    )


def validate_and_refine(
    report: Report, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, scores: Scores | None = None
) -> Validation:
    """Validates, then refines: refuted claims leave `report.claims` (kept in `validation.removed_claims`), a decision
    point whose claim was refuted leaves `report.decision_points`, and each refuted dependency is replaced by the
    next-ranked span of its step that passes the masking test, when one of the next `REPAIR_CANDIDATES` does. The
    score stays the first one: refinement cannot raise it. `scores`: as in `validate`."""
    validation = validate(report, model, tokenizer, scores)
    engine = [c for c in report.claims if c.author == "engine"]  # the model's own sentences refine nothing
    _mark_dependencies(report, engine)
    removed = [c for c in report.claims if c.status == "refuted"]
    refuted = [c for c in engine if c.status == "refuted"]
    repairs = _repair_dependencies([c for c in refuted if c.kind == "dependency"], report, model, tokenizer, scores)
    report.claims = [c for c in report.claims if c.status != "refuted"] + repairs
    refuted_points = {c.stated["position"] for c in refuted if c.kind == "decision"}
    report.decision_points = [d for d in report.decision_points if d.position not in refuted_points]
    validation.removed_claims, validation.repaired = removed, len(repairs)
    report.validation = validation
    return validation


def _repair_dependencies(refuted: list[Claim], report: Report, model, tokenizer, scores: Scores | None) -> list[Claim]:
    """For each refuted dependency, the first of its step's next-ranked spans (not claimed already) whose claim the
    masking test verifies; the spans tested and refuted on the way are marked refuted too."""
    if not refuted:
        return []
    chain = Chain.from_report(report)
    if scores is None:
        scores = score_chain(model, chain, [], temperature=report.token_temperature)
    claimed = {(c.step, tuple(c.stated["positions"])) for c in report.claims if "positions" in c.stated}
    steps = {s.index: s for s in report.steps}
    tried = []
    for claim in refuted:
        spare = [d for d in steps[claim.step].dependencies if (claim.step, tuple(d.span.positions)) not in claimed]
        for dependency in spare[:REPAIR_CANDIDATES]:
            candidate = dependency_claim(claim.step, dependency)
            candidate.replaces = claim.id
            claimed.add((claim.step, tuple(dependency.span.positions)))
            tried.append(candidate)
    _check_dependencies(tried, report, model, tokenizer, chain, scores)
    _mark_dependencies(report, tried)
    repairs, repaired = [], set()
    for candidate in tried:
        if candidate.status == "verified" and candidate.replaces not in repaired:
            repaired.add(candidate.replaces)
            repairs.append(candidate)
    return repairs


def _mark_dependencies(report: Report, claims: list[Claim]) -> None:
    """Each checked dependency claim's verdict on the span it names (`DependencyScore.status`), so that no view
    shows a refuted span as one the step rests on."""
    verdicts = {(c.step, tuple(c.stated["positions"])): c.status for c in claims if c.kind == "dependency"}
    for step in report.steps:
        for dependency in step.dependencies:
            verdict = verdicts.get((step.index, tuple(dependency.span.positions)))
            if verdict is not None:
                dependency.status = verdict


def _sampled_answers(
    claims: list[Claim], report: Report, model, tokenizer, chain: Chain, states=None
) -> dict[tuple[int, int], list[str | None]]:
    """For each branch (position, token) the causal decision and alternative claims name: the answers of
    `options.samples` continuations sampled from the model (temperature 1) after that token, seeded by the options.
    `states`: the chain's keys and values when at hand (the scoring pass's)."""
    branches = sorted(
        {
            (c.stated["position"], token)
            for c in claims
            for token in (
                [c.stated["token_id"]]
                if c.kind == "alternative"
                else [int(chain.token_ids[c.stated["position"]]), *c.stated["changing_token_ids"]]
            )
        }
    )
    options = report.options
    return sampled_answers(
        model,
        tokenizer,
        chain,
        branches,
        options.samples,
        options.seed,
        options.max_new_tokens,
        options.rollout_memory_mb,
        states,
    )


def _share(answers: list[str | None], result: str, original: str | None) -> float:
    """The share of sampled answers whose outcome against `original` is `result`."""
    return sum(outcome(a, original) == result for a in answers) / len(answers) if answers else 0.0


def _changed_share(answers: list[str | None], original: str | None) -> float:
    """The share of sampled answers that end somewhere else than the chain (`answers.changes_answer`)."""
    return sum(changes_answer(a, original) for a in answers) / len(answers) if answers else 0.0


def _check_decision(claim: Claim, report: Report, answers: dict) -> None:
    """Checks "the answer depends on this choice": after one of the alternatives that changed the answer in its
    rollout, continuations sampled from the model end elsewhere (another answer, or none) in a share at least
    `DECISION_SHIFT` larger than after the chosen token."""
    position = claim.stated["position"]
    chosen = int(report.tokens[position].id)
    after_chosen = _changed_share(answers[(position, chosen)], report.answer)
    changed = {t: _changed_share(answers[(position, t)], report.answer) for t in claim.stated["changing_token_ids"]}
    strongest = max(changed, key=changed.get) if changed else None
    _settle(
        claim,
        max(changed.values(), default=0.0) - after_chosen >= DECISION_SHIFT,
        f"{report.options.samples} continuations sampled after the chosen token and after each alternative that "
        f"changed the answer: the share that ends elsewhere must be at least {DECISION_SHIFT:.0%} larger after an "
        "alternative",
        changed_after_chosen=round(after_chosen, 3),
        changed_after={str(t): round(x, 3) for t, x in changed.items()},
        strongest_alternative=strongest,
        chosen_answers=answers[(position, chosen)],
    )


def _settle(claim: Claim, ok: bool, check: str, **evidence) -> None:
    claim.status = "verified" if ok else "refuted"
    claim.check = check
    claim.evidence = evidence


def _check_confidence(claim: Claim, report: Report, scores) -> None:
    probs = scores.logprobs.exp()
    if "least_confident_step" in claim.stated:
        reasoning = [s for s in report.steps if not s.is_answer]
        measured = [float(probs[s.token_start : s.token_end].mean()) for s in reasoning]
        if not measured:
            _settle(claim, False, "the chain has no reasoning steps to compare")
            return
        weakest = min(range(len(measured)), key=measured.__getitem__)
        claimed = claim.stated["least_confident_step"]
        # Stated to two decimals: steps within 0.01 of the lowest are tied with it.
        lowest = 0 <= claimed < len(measured) and measured[claimed] <= measured[weakest] + 0.01
        ok = lowest and abs(measured[claimed] - claim.stated["prob"]) <= 0.05
        _settle(
            claim,
            ok,
            "uncached pass: the step's mean token probability is the lowest of the reasoning steps (ties within "
            "0.01) and as stated (±0.05)",
            measured_step=weakest,
            measured_prob=measured[weakest],
        )
        return
    if claim.id == "confidence-answer":
        tokens = claim.stated["tokens"]
        measured = float(scores.logprobs[tokens].sum().exp()) if tokens else float("nan")
    else:
        start, end = claim.stated["tokens"]
        measured = float(probs[start:end].mean())
    ok = abs(measured - claim.stated["prob"]) <= PROB_TOLERANCE
    _settle(claim, ok, f"uncached teacher-forced pass, tolerance {PROB_TOLERANCE}", measured_prob=measured)


def _check_decision_score(claim: Claim, report: Report, scores: Scores) -> None:
    """A decision point that was not rolled out: its probability and score read again from the uncached pass."""
    position = claim.stated["position"]
    prob = float(scores.logprobs[position].exp())
    point = next((d for d in report.decision_points if d.position == position), None)
    if point is None:
        _settle(claim, False, "the report has no decision point at the claimed position")
        return
    meta = None if point.meta_score is None else torch.tensor([point.meta_score])  # the head's score, as reported
    here = slice(position, position + 1)
    calibrated = report.options.decision_temperature == "calibrated"
    uncertainty = TokenUncertainty.of(scores, None, calibrated).at(here)
    uncertainty.meta = meta
    score = float(decision_scores(report.options.decision_score, uncertainty)[0])
    threshold = report.options.threshold
    ok = abs(prob - claim.stated["prob"]) <= PROB_TOLERANCE and score >= threshold - PROB_TOLERANCE
    _settle(
        claim,
        ok,
        f"uncached pass: probability within {PROB_TOLERANCE}, score at the threshold",
        measured_prob=prob,
        measured_score=score,
    )


def _check_alternatives(
    claims: list[Claim], report: Report, model, tokenizer, chain: Chain, answers: dict | None = None
) -> None:
    """Each claimed rollout must be what greedy decoding gives: a teacher-forced pass over every rolled-out chain
    (`_greedy_agreement`) must pick each of its tokens as a most likely one (a tie counts), and the chain must end
    (end-of-sequence or the token budget) where the rollout ended; its answer and outcome are re-read. Then most of
    the continuations sampled after the forced token (`answers`, by branch) must end with the stated outcome."""
    answers = answers or {}
    eos = eos_ids(model)
    rolled = {(d.position, a.token_id): a.ids for d in report.decision_points for a in d.alternatives}
    end = chain_end(model, chain, report.options.max_new_tokens)
    checked = [c for c in claims if rolled.get((c.stated["position"], c.stated["token_id"]))]
    for claim in claims:
        if claim not in checked:
            _settle(claim, False, "no rollout is recorded for this alternative")
    sequences = [
        torch.cat(
            [
                chain.prompt_ids,
                chain.token_ids[: c.stated["position"]],
                torch.tensor(rolled[(c.stated["position"], c.stated["token_id"])]),
            ]
        )
        for c in checked
    ]
    forced = [chain.prompt_len + c.stated["position"] for c in checked]
    memory_mb = report.options.rollout_memory_mb
    agreement = _greedy_agreement(model, sequences, forced, memory_mb) if sequences else []
    for claim, sequence, greedy in zip(checked, sequences, agreement, strict=True):
        position = claim.stated["position"]
        ids = sequence[chain.prompt_len + position :].tolist()
        ended = ids[-1] in eos or len(sequence) >= end
        text = decode_chain(tokenizer, chain.token_ids[:position].tolist() + ids, eos)
        answer = extract_answer(text)
        result = outcome(answer, report.answer)
        replayed = greedy and ended and result == claim.stated["outcome"] and answer == claim.stated["answer"]
        sampled = answers.get((position, claim.stated["token_id"]), [])
        agree = _share(sampled, claim.stated["outcome"], report.answer)
        _settle(
            claim,
            replayed and agree > 0.5,
            "the greedy rollout replayed by a teacher-forced pass (every token a most likely one, the chain ends "
            f"where it ended, its answer re-read), and {len(sampled)} continuations sampled after the forced token: "
            "most must end as stated",
            greedy=greedy,
            ended=ended,
            measured_answer=answer,
            measured_outcome=result,
            sampled_answers=sampled,
            sampled_agreement=round(agree, 3),
        )


@torch.no_grad()
def _greedy_agreement(model, sequences: list[torch.Tensor], forced: list[int], memory_mb: float = 512.0) -> list[bool]:
    """For each sequence, whether every token after the forced one (at index `forced[i]`) is a most likely token
    of the model's prediction at the position before it (a tie counts).

    The sequences branch off one chain: each is the chain's first `forced[i]` ids, the forced token and the rollout.
    One forward pass of its own over the longest of those prefixes gives their keys and values; each row is then fed
    only from its branch point on, over a left-padded copy of its prefix in a plain cache (not the rollouts' cache or
    attention): feeding each row from its own branch point beats feeding a batch from its earliest one, and one pass
    gains nothing from the shared-prefix attention that pays off over many decoding steps (docs/measurements.md). Rows
    go in batches of similar length (`_row_batches`): within the model's context and the memory bound `memory_mb` (the
    rollouts' `rollout_memory_mb`). A sequence off the chain, or any when the cache keeps other than plain layers
    (sliding windows), is scored from its start. Logits are compared with their maximum (`amax`): an `argmax` over the
    vocabulary was several times slower here."""
    chain_prefix, prefix_cache = _chain_prefix_states(model, sequences, forced)
    on_chain = [
        prefix_cache is not None and torch.equal(s[:k], chain_prefix[:k])
        for s, k in zip(sequences, forced, strict=True)
    ]
    positions = memory_mb * 2**20 // kv_cache_bytes_per_token(model)  # cache positions the memory bound holds
    results: dict[int, bool] = {}
    for own in (True, False):
        which = sorted(
            (i for i in range(len(sequences)) if on_chain[i] == own),
            key=lambda i: len(sequences[i]) - (forced[i] if own else 0),
        )
        starts = [forced[i] if own else 0 for i in which]
        for batch in _row_batches(which, starts, [len(sequences[i]) for i in which], positions, context_length(model)):
            rows = [sequences[i] for i in batch]
            if own:
                points = [forced[i] for i in batch]
                top = _most_likely_after_branch(model, rows, points, prefix_cache)
                spans = [(0, len(s) - k - 1) for s, k in zip(rows, points, strict=True)]
            else:
                first = min(forced[i] for i in batch)
                top = _most_likely_from(model, rows, first)
                spans = [(forced[i] - first, len(sequences[i]) - 1 - first) for i in batch]
            for r, i in enumerate(batch):
                results[i] = bool(top[r, spans[r][0] : spans[r][1]].all())
    return [results[i] for i in range(len(sequences))]


def _row_batches(
    order: list[int], starts: list[int], lengths: list[int], positions: float, context: int | None
) -> list[list[int]]:
    """`order` cut into consecutive batches of at most `ROWS_PER_PASS` rows whose left-padded width (the latest start
    plus the longest part after a start) stays within the model's context, and whose rows × width cache positions
    fit `positions` (each row alone always goes). `starts` and `lengths` are given per item of `order`."""
    start, length = dict(zip(order, starts, strict=True)), dict(zip(order, lengths, strict=True))

    def fits(batch: list[int]) -> bool:
        width = max(start[i] for i in batch) + max(length[i] - start[i] for i in batch)
        return len(batch) <= ROWS_PER_PASS and width <= (context or width) and len(batch) * width <= positions

    return consecutive_batches(order, fits)


def _chain_prefix_states(model, sequences: list[torch.Tensor], forced: list[int]) -> tuple[torch.Tensor, Cache | None]:
    """The longest forced prefix, and its keys and values (None when the cache is not plain)."""
    longest = max(range(len(sequences)), key=forced.__getitem__)
    prefix = sequences[longest][: forced[longest]]
    if not len(prefix):
        return prefix, None
    cache = cache_of(model(input_ids=prefix[None].to(model.device), use_cache=True, logits_to_keep=1))
    return prefix, cache if cache is not None and plain_cache(cache) else None


def _most_likely_after_branch(model, sequences: list[torch.Tensor], points: list[int], prefix_cache: Cache):
    """(R, W - 1), W the longest part from a branch point on: whether each token after the forced one (at
    `points[r]`) is a most likely one. Rows are left-padded up to their branch points and fed from there; the
    chain's keys and values before them are copied from `prefix_cache`."""
    longest = max(points)
    width = max(len(s) - k for s, k in zip(sequences, points, strict=True))
    rows, mask = padded_batch(sequences, offsets=[longest - k for k in points])  # aligned at the branch points
    cache = Cache(layers=[DynamicLayer() for _ in prefix_cache.layers])
    for layer, prefix in zip(cache.layers, prefix_cache.layers, strict=True):
        layer.update(*(left_padded_states(x[..., :longest, :], points, longest) for x in (prefix.keys, prefix.values)))
    rows, mask = rows.to(model.device), mask.to(model.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(**inputs_after_cache(model, rows, cache, mask, position_ids=positions), logits_to_keep=width)
    logits = out.logits[:, -width:-1]  # column c: the prediction after the row's own token c
    following = rows[:, longest + 1 :]
    return (logits.gather(-1, following[..., None])[..., 0] >= logits.amax(-1)).cpu()


def _most_likely_from(model, sequences: list[torch.Tensor], first: int) -> torch.Tensor:
    """(R, W - first - 1): whether each token of the (right-padded) sequences after position `first` is a most likely
    one, each sequence fed whole."""
    width = max(len(s) for s in sequences)
    rows, mask = padded_batch(sequences, side="right")
    rows, mask = rows.to(model.device), mask.to(model.device)
    out = model(input_ids=rows, attention_mask=mask, use_cache=False, logits_to_keep=width - first)
    logits = out.logits[:, first - width : -1]
    # Column c: the prediction at position first + c (causality keeps the right padding out of every real one).
    # Compared in the model's own dtype: a float32 copy of rows × positions × vocabulary is not needed.
    following = rows[:, first + 1 :]
    return (logits.gather(-1, following[..., None])[..., 0] >= logits.amax(-1)).cpu()


def _check_dependencies(claims: list[Claim], report: Report, model, tokenizer, chain: Chain, scores) -> None:
    """Each claim's span masked, and `random_controls` random spans of as many tokens: the step's loss with each,
    against the unchanged step's loss from the uncached pass that scored the whole chain (`scores`: causality makes
    it the same, up to rounding).

    A masked row serves every step that masks the same positions (`masked_step_losses`). The random spans of one
    length are drawn for all steps from one shuffled order of the chain's windows, so each step still gets a uniform
    sample of the windows it may depend on, and the question's windows are shared by the steps, so fewer rows are fed
    than when every step's spans are drawn apart (docs/measurements.md)."""
    controls = report.options.random_controls
    draw = _ControlSpans(report, random.Random(report.options.seed))
    steps = {s.index: s for s in report.steps}
    plans, requests = [], {}  # requests: masked positions -> the steps read from that row
    for claim in sorted(claims, key=lambda c: c.step):
        claimed = tuple(claim.stated["positions"])
        masks = [claimed, *map(tuple, draw(claim.step, len(claimed), set(claimed), controls))]
        plans.append((claim, masks))
        for mask in masks:
            requests.setdefault(mask, set()).add(claim.step)
    masks = list(requests)
    asked = [(list(mask), [_tokens(steps[i]) for i in sorted(requests[mask])]) for mask in masks]
    measured = masked_step_losses(model, chain, asked, replacement_id(tokenizer))
    loss = {
        (mask, i): x
        for mask, row in zip(masks, measured, strict=True)
        for i, x in zip(sorted(requests[mask]), row, strict=True)
    }
    for claim, (claimed, *randoms) in plans:
        step = steps[claim.step]
        unchanged = -float(scores.logprobs[step.token_start : step.token_end].sum())
        _settle_dependency(
            claim, loss[(claimed, step.index)] - unchanged, [loss[(r, step.index)] - unchanged for r in randoms]
        )


def _tokens(step) -> range:
    return range(step.token_start, step.token_end)


def _settle_dependency(claim: Claim, effect: float, random_effects: list[float]) -> None:
    if not random_effects:
        _settle(claim, False, "no random span of the same length to compare with", effect=effect)
        return
    typical = statistics.median(random_effects)
    _settle(
        claim,
        effect > 0 and effect > typical,
        f"masking the span vs {len(random_effects)} random spans of {len(claim.stated['positions'])} tokens: "
        "change of the step's negative log-likelihood (nats)",
        effect=effect,
        random_effects=random_effects,
        random_median=typical,
        beats_share=sum(effect > r for r in random_effects) / len(random_effects),
    )


def _eligible_positions(report: Report, step: int) -> list[int]:
    """Token positions a step may depend on: the question's spans and the spans of earlier steps."""
    first = next(s for s in report.steps if s.index == step)
    positions = {p for d in first.dependencies for p in d.span.positions}
    return sorted(positions)


class _ControlSpans:
    """Random control spans for the steps of one report: per span length, the windows (runs of consecutive
    positions) that any step may depend on, shuffled once; a step takes the first `count` of them it may depend on
    and that avoid its claim. Where there are not enough, random sets of its positions fill in (a short question
    has few runs)."""

    def __init__(self, report: Report, rng: random.Random) -> None:
        self.report, self.rng = report, rng
        self.pool = sorted({p for s in report.steps for p in _eligible_positions(report, s.index)})
        self.orders: dict[int, list[list[int]]] = {}

    def __call__(self, step: int, length: int, avoid: set[int], count: int) -> list[list[int]]:
        allowed = set(_eligible_positions(self.report, step)) - avoid
        if length not in self.orders:
            pool = set(self.pool)
            windows = [list(range(p, p + length)) for p in self.pool if all(q in pool for q in range(p, p + length))]
            self.rng.shuffle(windows)
            self.orders[length] = windows
        picked = [w for w in self.orders[length] if allowed.issuperset(w)][:count]
        size = min(length, len(allowed))
        if len(picked) >= count or not size:
            return picked
        return picked + [sorted(self.rng.sample(sorted(allowed), size)) for _ in range(count - len(picked))]
