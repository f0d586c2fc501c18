"""GenerateAlternatives: force another token at a decision point and let the model finish the chain.

All alternatives of one decision point share the prefix (prompt + chain up to that point): the
prefix runs once, its KV cache is repeated for the k alternatives, and the k rollouts are generated
greedily as one batch.
"""

from __future__ import annotations

import re

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data.format import ANSWER, parse_answer

_ANSWER_IS = re.compile(r"(?i)(?:answer is|answer:|####)\s*\$?\s*([^\s.,;]+(?:[.,]\d+)?)")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def extract_answer(chain: str) -> str | None:
    """The answer a chain states: SAGE's `<|answer|>`, else "answer is X" / `\\boxed{X}` / "#### X", else
    the last number; None when there is none."""
    if ANSWER in chain:
        return parse_answer(chain) or None
    for pattern in (_BOXED, _ANSWER_IS):
        found = pattern.findall(chain)
        if found:
            return found[-1].strip()
    numbers = _NUMBER.findall(chain)
    return numbers[-1] if numbers else None


def outcome(answer: str | None, original: str | None) -> str:
    if answer is None:
        return "no_answer"
    return "same_answer" if original is not None and answer.strip() == original.strip() else "different_answer"


def _cache_of(output):
    return getattr(output, "cache", None) or getattr(output, "past_key_values", None)


@torch.no_grad()
def rollouts(
    model: PreTrainedModel, prefix: torch.Tensor, alternatives: list[int], max_new_tokens: int, reuse_cache: bool = True
) -> list[list[int]]:
    """Greedy continuations after `prefix` + each alternative token; each result starts with that token and
    ends at (and includes) the end-of-sequence token when one is produced."""
    rows = torch.cat([prefix[None].expand(len(alternatives), -1), torch.tensor(alternatives)[:, None]], dim=1)
    rows = rows.to(model.device)
    kwargs = {}
    if reuse_cache and len(prefix) > 0:
        cache = _cache_of(model(input_ids=prefix[None].to(model.device), use_cache=True))
        if cache is not None and hasattr(cache, "batch_repeat_interleave"):
            cache.batch_repeat_interleave(len(alternatives))
            kwargs["cache"] = cache
    if max_new_tokens < 1:
        return [[a] for a in alternatives]
    out = model.generate(
        input_ids=rows, attention_mask=torch.ones_like(rows), max_new_tokens=max_new_tokens, do_sample=False,
        pad_token_id=_pad_id(model), **kwargs,
    )  # fmt: skip
    return [_until_eos(model, row[len(prefix) :].tolist()) for row in out.cpu()]


def _pad_id(model: PreTrainedModel) -> int | None:
    config = model.generation_config
    if config.pad_token_id is not None:
        return config.pad_token_id
    eos = config.eos_token_id
    return eos[0] if isinstance(eos, list) else eos


def _until_eos(model: PreTrainedModel, ids: list[int]) -> list[int]:
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    for i, token in enumerate(ids[1:], start=1):
        if token in eos_ids:
            return ids[: i + 1]
    return ids


def decode_chain(tokenizer: PreTrainedTokenizerBase, ids: list[int], eos_ids: set[int]) -> str:
    """The chain's text, a final end-of-sequence token left out (as the trace's text leaves it out)."""
    if ids and ids[-1] in eos_ids:
        ids = ids[:-1]
    return tokenizer.decode(ids)
