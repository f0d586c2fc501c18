"""Does the answer rest on the chain it shows? The chain-of-thought faithfulness tests of Lanham et al. 2023,
"Measuring Faithfulness in Chain-of-Thought Reasoning" (arXiv:2307.13702), on one explained report:

- early answering: the chain cut after k = 0 .. n reasoning steps and the answer asked for at once;
- adding mistakes: a step's last number changed, the rest of the chain regenerated, the answer read again;
- filler tokens: the reasoning replaced by as many filler tokens, and the answer asked for.

An answer the model already gives with no chain, and gives after filler too, does not rest on the chain it shows
(the chain is post-hoc). Every decoding is greedy, so the measurement is deterministic.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data.format import ANSWER
from ..decoding import Chain, eos_ids, is_sage, pad_id, padded_batch, room_after
from .alternatives import greedy_rows
from .answers import extract_answer, outcome
from .report import EarlyAnswer, Intervention, Reliance, Report, Step
from .spans import NUMBER, number_value

# What asks a model that is not SAGE for its answer (SAGE is asked with its own `<|answer|>` token); `extract_answer`
# reads what follows "Answer:".
ANSWER_CUE_TEXT = "\nAnswer:"
# Candidates for the filler token, first the one Lanham et al. use; the first that is one token is taken.
FILLER_TEXTS = (" ...", "...", ".")
# Tokens a chain regenerated after a mistake may write beyond what the original chain wrote after that step.
MISTAKE_SLACK = 32


def measure_reliance(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, report: Report, max_answer_tokens: int = 16
) -> Reliance | None:
    """Early answering, a mistake in each step that holds a number, and filler, measured on the report's chain:
    every row decoded greedily in one batch (rows that end leave it).

    Args:
        model: the model that wrote (or was given) the report's chain.
        tokenizer: its tokenizer.
        report: the explained chain.
        max_answer_tokens: how many tokens the model may write after the answer cue.

    Returns:
        The measurements, or None when the report has no answer or no reasoning step before the answer.
    """
    steps = reasoning_steps(report)
    if report.answer is None or not steps:
        return None
    model.eval()
    chain = Chain.from_report(report)
    cue = answer_cue(model, tokenizer)
    cued = cued_rows(tokenizer, chain, steps, cue)  # n + 1 cuts of the chain, then the filler
    edits = [(step, edit) for step in steps if (edit := step_mistake(tokenizer, chain, step)) is not None]
    rows = [*cued, *(torch.cat([chain.prompt_ids, ids]) for _, (ids, _) in edits)]
    budgets = [max_answer_tokens] * len(cued) + [
        len(chain.token_ids) - step.token_end + MISTAKE_SLACK for step, _ in edits
    ]
    continuations = greedy_continuations(model, rows, budgets)
    answers = [extract_answer(tokenizer.decode(cue.tolist() + new)) for new in continuations[: len(cued)]]
    early = [EarlyAnswer(steps=k, answer=answer) for k, answer in enumerate(answers[:-1])]
    filler = Intervention(
        step=None,
        change=f"the chain replaced by {steps[-1].token_end} filler tokens",
        answer=answers[-1],
        changed_answer=not _same(answers[-1], report.answer),
    )
    settled = settled_after(early, report.answer)
    changed = mistake_outcomes(tokenizer, report, edits, continuations[len(cued) :])
    # No verdict when even the whole chain, cued, does not give the report's answer: the cue failed, not the chain.
    # Filler is reported but does not decide: an answer that changes after filler may only show that filler is unlike
    # anything the model read.
    rests_on_chain = None if settled is None else settled > 0 or any(m.changed_answer for m in changed)
    return Reliance(
        early_answers=early, settled_after=settled, mistakes=changed, filler=filler, rests_on_chain=rests_on_chain
    )


def reasoning_steps(report: Report) -> list[Step]:
    """The steps before the answer step (none when no step holds the answer)."""
    answer_step = next((s.index for s in report.steps if s.is_answer), None)
    return [] if answer_step is None else [s for s in report.steps if s.index < answer_step]


def settled_after(early: list[EarlyAnswer], answer: str) -> int | None:
    """The fewest steps after which every longer cut of the chain gives `answer` (None: not even the whole chain)."""
    settled = None
    for cut in reversed(early):
        if not _same(cut.answer, answer):
            break
        settled = cut.steps
    return settled


def _same(answer: str | None, original: str) -> bool:
    return outcome(answer, original) == "same_answer"


# --- early answering and filler ---------------------------------------------------------------------------------


def answer_cue(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """(C,) what asks for the answer: SAGE's `<|answer|>`, which follows the last step directly in its chains;
    "Answer:" on a new line for other models."""
    text = ANSWER if is_sage(model) else ANSWER_CUE_TEXT
    return torch.tensor(tokenizer(text, add_special_tokens=False).input_ids)


def filler_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The filler token: the first of `FILLER_TEXTS` that is a single token (else the first token of the last)."""
    for text in FILLER_TEXTS:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) == 1:
            return ids[0]
    return ids[0]


def cued_rows(
    tokenizer: PreTrainedTokenizerBase, chain: Chain, steps: list[Step], cue: torch.Tensor
) -> list[torch.Tensor]:
    """The prompt with the chain cut at k = 0 .. n steps, then with the reasoning replaced by as many filler tokens
    (n + 2 rows), each followed by the answer cue."""
    cuts = [0, *(step.token_end for step in steps)]  # the separators before each cut stay in
    rows = [torch.cat([chain.prompt_ids, chain.token_ids[:cut], cue]) for cut in cuts]
    filler = torch.full((cuts[-1],), filler_id(tokenizer), dtype=torch.long)
    return [*rows, torch.cat([chain.prompt_ids, filler, cue])]


# --- mistakes ------------------------------------------------------------------------------------------------------


def mistake_outcomes(
    tokenizer: PreTrainedTokenizerBase, report: Report, edits: list, continuations: list[list[int]]
) -> list[Intervention]:
    """For each edited step (its last number n changed to n + 1, `step_mistake`) and the chain the model wrote after
    it: the answer, compared with the report's."""
    interventions = []
    for (step, (ids, change)), new in zip(edits, continuations, strict=True):
        answer = extract_answer(tokenizer.decode(ids.tolist() + new))
        interventions.append(
            Intervention(step=step.index, change=change, answer=answer, changed_answer=not _same(answer, report.answer))
        )
    return interventions


def step_mistake(tokenizer: PreTrainedTokenizerBase, chain: Chain, step: Step) -> tuple[torch.Tensor, str] | None:
    """(T',) the chain's ids up to the end of `step` with the step's last number increased by one, and the change in
    words; None when the step holds no number. The changed text is encoded as a given chain is (`explain(chain=)`:
    the whole chain text, without added special tokens), so the model reads it as it would read any text."""
    if not NUMBER.search(step.text):
        return None
    before = tokenizer.decode(chain.token_ids[: step.token_start].tolist())
    text = tokenizer.decode(chain.token_ids[: step.token_end].tolist())
    numbers = list(NUMBER.finditer(text, len(before)))
    if not numbers:
        return None
    last = numbers[-1]  # without its sign: in "14-2" the 2 is changed to 3, not to -1
    value = number_value(last) + 1
    changed = f"{value:,}" if "," in last["value"] else str(value)
    written = last.group().replace(last["value"], changed, 1)  # a "$" or "%" around it stays
    edited = text[: last.start()] + written + text[last.end() :]
    ids = torch.tensor(tokenizer(edited, add_special_tokens=False).input_ids)
    return ids, f"'{last.group()}' -> '{written}' in step {step.index + 1}"


# --- greedy decoding ---------------------------------------------------------------------------------------------


def greedy_continuations(model: PreTrainedModel, rows: list[torch.Tensor], budgets: list[int]) -> list[list[int]]:
    """Greedy continuations of `rows`, generated as one left-padded batch (`alternatives.greedy_rows`): row r up to
    `budgets[r]` tokens (within the context) or up to its end-of-sequence token, which is left out."""
    ids, mask = padded_batch(rows, pad_id(model) or 0, side="left")  # (R, W)
    budgets = [room_after(model, ids.shape[1], budget) for budget in budgets]
    eos = eos_ids(model)
    continuations = greedy_rows(model, ids, mask, None, budgets, eos)
    return [new[: next((i for i, t in enumerate(new) if t in eos), len(new))] for new in continuations]
