"""Greedy decoding that guesses ahead from known text (prompt-lookup decoding), for text that repeats itself.

Each step feeds the newest token plus a draft: the tokens that followed the latest earlier occurrence of the
last few tokens, in the sequence so far or in a reference pool (e.g. examples of the format the model writes).
One forward pass scores all of them; the draft is kept up to its first token that greedy decoding would not
have chosen, and the model's own choice follows. The result is greedy decoding's (up to near-ties within
rounding: a pass over several positions rounds differently from one over one): only the number of forward passes
changes. On a small model, where one pass costs about the same for one token as for ten, that is the cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel

from .decoding import decoding_block, inputs_after_cache, plain_cache


def lookup_draft(sequence: list[int], pool: list[int], max_ngram: int, max_draft: int) -> list[int]:
    """Up to `max_draft` tokens that followed the latest earlier occurrence of the sequence's last n tokens
    (longest n first, n ≤ `max_ngram`), searched in the sequence, then in the pool; [] when nothing matches."""
    for n in range(min(max_ngram, len(sequence) - 1), 0, -1):
        tail = sequence[-n:]
        for source, stop in ((sequence, len(sequence) - n), (pool, len(pool) - n + 1)):
            for start in range(stop - 1, -1, -1):
                if source[start : start + n] == tail:
                    draft = source[start + n : start + n + max_draft]
                    if draft:
                        return draft
    return []


@torch.no_grad()
def lookup_greedy(
    model: PreTrainedModel,
    prefix: list[int],
    max_new_tokens: int,
    stop_ids: set[int],
    pool: list[int] = (),
    max_ngram: int = 3,
    max_draft: int = 10,
    cache: DynamicCache | None = None,
) -> tuple[list[int], list[float]]:
    """Greedy continuation of `prefix` (one sequence) up to a token in `stop_ids` (kept) or `max_new_tokens`,
    and each new token's probability. Drafts come from `lookup_draft` over the text so far and `pool`.
    `cache`: the keys and values of the prefix's first positions (at most all but its last), which are not
    computed again; it is extended in place. Rejected drafts are cropped from the cache, so a cache that is not
    plain (`plain_cache`: a sliding window keeps only some positions) is refused."""
    probs: list[float] = []

    def keep_probs(chosen: list[int], logits: torch.Tensor) -> None:
        logp = logits.float().log_softmax(-1)
        probs.extend(float(logp[i, token].exp()) for i, token in enumerate(chosen))

    new = lookup_decode(model, prefix, max_new_tokens, stop_ids, keep_probs, pool, max_ngram, max_draft, cache)
    return new, probs


@torch.no_grad()
def lookup_decode(
    model: PreTrainedModel,
    prefix: list[int],
    max_new_tokens: int,
    stop_ids: set[int],
    on_chosen: Callable[[list[int], torch.Tensor], None],
    pool: list[int] = (),
    max_ngram: int = 3,
    max_draft: int = 10,
    cache: DynamicCache | None = None,
) -> list[int]:
    """`lookup_greedy`'s decoding: returns the new tokens and calls `on_chosen(tokens, logits)` after each forward
    pass with the tokens it chose and the logits (len(tokens), V) that chose each. Afterwards `cache` holds at least
    the prefix and every new token but the last (and possibly rejected draft positions after them)."""
    ids = list(prefix)
    cache = cache if cache is not None else DynamicCache(config=model.config)
    if not 0 <= cache.get_seq_length() < len(ids):
        raise ValueError(f"the cache holds {cache.get_seq_length()} positions; the prefix has {len(ids)}")
    if not plain_cache(cache):
        raise ValueError(
            "lookup decoding crops its cache, which a sliding-window (non-plain) cache cannot do; use generate()"
        )
    with decoding_block(model):
        return _decode(model, ids, max_new_tokens, stop_ids, on_chosen, list(pool), max_ngram, max_draft, cache)


def _decode(
    model,
    ids: list[int],
    max_new_tokens: int,
    stop_ids: set[int],
    on_chosen,
    pool: list[int],
    max_ngram: int,
    max_draft: int,
    cache: DynamicCache,
) -> list[int]:
    new: list[int] = []
    draft: list[int] = []
    while len(new) < max_new_tokens:
        inputs = inputs_after_cache(model, torch.tensor([ids + draft], device=model.device), cache)
        fed = len(draft) + 1
        logits = model(**inputs, logits_to_keep=fed).logits[0, -fed:]
        greedy = logits.argmax(-1).tolist()  # greedy[i]: the choice after ids + draft[:i]
        kept = 0
        while kept < len(draft) and draft[kept] == greedy[kept]:
            kept += 1
        chosen = [*draft[:kept], greedy[kept]][: max_new_tokens - len(new)]
        stop = next((i for i, token in enumerate(chosen) if token in stop_ids), None)
        chosen = chosen if stop is None else chosen[: stop + 1]
        on_chosen(chosen, logits[: len(chosen)])
        new += chosen
        if stop is not None:
            break
        ids += chosen
        surplus = cache.get_seq_length() - (len(ids) - 1)  # rejected draft positions; the last chosen token
        if surplus:  # has not been fed yet
            cache.crop(-surplus)
        draft = lookup_draft(ids, pool, max_ngram, min(max_draft, max_new_tokens - len(new) - 1))
    return new


# Generation-config fields that leave greedy decoding's choice alone (sampling and beam settings, lengths, special
# ids, outputs), and the values that switch other fields off. Any other setting counts as a logits processor.
_GREEDY_NEUTRAL = {
    "use_cache",
    "pad_token_id",
    "eos_token_id",
    "bos_token_id",
    "decoder_start_token_id",
    "max_length",
    "max_new_tokens",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "output_logits",
    "return_dict_in_generate",
    "_from_model_config",
    "transformers_version",
    "length_penalty",
    "early_stopping",
}
_SWITCHED_OFF = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "guidance_scale": 1.0,
    "num_beams": 1,
    "num_beam_groups": 1,
    "num_return_sequences": 1,
    "diversity_penalty": 0.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "min_length": 0,
    "min_new_tokens": 0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "renormalize_logits": False,
    "remove_invalid_values": False,
}


def lookup_applies(model: PreTrainedModel) -> bool:
    """Whether lookup decoding gives this model's `generate` tokens: its cache is plain (lookup decoding crops
    rejected drafts) and its generation config adds no logits processor to greedy decoding (e.g. a repetition
    penalty, which lookup decoding does not apply)."""
    settings = model.generation_config.to_diff_dict().items()
    return plain_cache(DynamicCache(config=model.config)) and not any(_adds_a_processor(k, v) for k, v in settings)


def _adds_a_processor(key: str, value: Any) -> bool:
    """Whether a generation-config setting may change what greedy decoding picks: any but the neutral fields, unless
    unset, empty, or at the value that switches it off (a repetition penalty of 1, an n-gram size of 0)."""
    if key in _GREEDY_NEUTRAL or value is None or value in ([], {}):
        return False
    return key not in _SWITCHED_OFF or value != _SWITCHED_OFF[key]
