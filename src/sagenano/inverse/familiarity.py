"""Is the question like what the model was trained on? Measured signs, any of which makes a report say so at the
top: question tokens the tokenizer does not know (its unknown token); more than `UNSEEN_TOKEN_SHARE` of the
question's tokens absent from every calibration question (held-out items of the training tasks); a question less
likely under the model than 99 % of the calibration questions (mean negative log-likelihood per token); and, on SAGE
models, a chain that leaves the trained format (no `<|answer|>`, or cut by the token budget). The calibration
(`sage-nano calibrate`) holds the questions' tokens and the likelihood bound; without it those two are not
measured."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data.format import ANSWER
from ..decoding import is_sage
from .calibration import question_nll
from .confidence import Calibration
from .report import Familiarity, Report

# Held-out questions of the training tasks had at most 2 % of their tokens outside the calibration questions'
# (docs/measurements.md); questions of other kinds had a third or more.
UNSEEN_TOKEN_SHARE = 0.05


@torch.no_grad()
def measure_familiarity(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, report: Report, calibration: Calibration | None
) -> Familiarity:
    """The question's familiarity to the model, with the reasons (in words) when it is unusual."""
    prompt = torch.tensor(report.prompt_ids)
    logits = model(input_ids=prompt[None].to(model.device), use_cache=False).logits[0]
    nll = question_nll(logits, prompt)
    bound = calibration.question_nll_bound if calibration is not None else None
    unknown = tokenizer.unk_token_id
    untrained = [tokenizer.decode([i]) for i in report.prompt_ids if unknown is not None and i == unknown]
    reasons = []
    if untrained:
        reasons.append(f"{len(untrained)} token(s) of the question are unknown to the tokenizer")
    seen = set(calibration.question_token_ids) if calibration is not None else set()
    unseen = [tokenizer.decode([i]) for i in report.prompt_ids if seen and i not in seen]
    if seen and len(unseen) > UNSEEN_TOKEN_SHARE * len(report.prompt_ids):
        shown = ", ".join(repr(u) for u in dict.fromkeys(unseen) if u.strip())
        reasons.append(
            f"{len(unseen)} of its {len(report.prompt_ids)} tokens never occur in the questions the model was "
            f"calibrated on ({shown[:80]})"
        )
    if bound is not None and nll > bound:
        reasons.append(
            f"the question is less likely under the model ({nll:.2f} nats per token) than 99 % of the questions it "
            f"was calibrated on (bound {bound:.2f})"
        )
    if is_sage(model):
        if ANSWER not in report.chain:
            reasons.append("the chain never reached the answer marker the model was trained to write")
        elif report.finish_reason == "length":
            reasons.append("the chain was cut by the token budget")
    return Familiarity(
        unusual=bool(reasons),
        reasons=reasons,
        question_nll=nll,
        typical_nll=bound,
        untrained_tokens=untrained,
        unseen_tokens=unseen,
    )
