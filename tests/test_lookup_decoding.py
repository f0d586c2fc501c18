"""Lookup decoding gives greedy decoding's tokens and probabilities in fewer forward passes."""

from __future__ import annotations

import pytest
import torch

from conftest import make_hf_model, make_sage
from sagenano.data import generate_items
from sagenano.data.format import prompt_text
from sagenano.decoding import eos_ids
from sagenano.inverse.own_explanation import explanation_pool
from sagenano.loading import load_model
from sagenano.lookup_decoding import lookup_draft, lookup_greedy


def greedy_reference(model, prefix: list[int], max_new_tokens: int, pad_token_id: int):
    ids = torch.tensor([prefix])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, output_scores=True, return_dict_in_generate=True,
                         pad_token_id=pad_token_id)  # fmt: skip
    new = out.sequences[0, len(prefix) :].tolist()
    return new, [float(s[0].float().softmax(-1)[t]) for s, t in zip(out.scores, new, strict=True)]


def count_forwards(model) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_drafts_copy_what_followed_the_latest_longest_match():
    sequence = [1, 2, 3, 9, 2, 3, 4, 5, 1, 2, 3]
    assert lookup_draft(sequence, [], max_ngram=3, max_draft=2) == [9, 2], "the 3-gram 1 2 3 matched first"
    assert lookup_draft([7, 2, 3, 4, 8, 3], [], max_ngram=3, max_draft=5) == [4, 8, 3], "only the 1-gram 3 matches"
    assert lookup_draft([5, 6], [6, 1, 5, 6, 7, 8], max_ngram=2, max_draft=1) == [7], "then the pool"
    assert lookup_draft([5, 6], [1, 2], max_ngram=2, max_draft=4) == []
    assert lookup_draft([5, 6], [6, 3, 9, 6], max_ngram=1, max_draft=2) == [3, 9], "a match with nothing after it"
    assert lookup_draft([4, 4, 4], [], max_ngram=2, max_draft=3) == [4], "the text so far never drafts itself"


def test_the_shipped_model_writes_its_explanation_as_generate_does_in_fewer_passes(tokenizer):
    loaded = load_model()
    model = loaded.model
    eos = eos_ids(model)
    pool = explanation_pool(tokenizer)
    marker = tokenizer.convert_tokens_to_ids("<|explanation|>")
    calls = count_forwards(model)
    written = passes = 0
    for item in [*generate_items("arithmetic", 3, 11, "heldout"), *generate_items("logic", 2, 11, "heldout")]:
        chain = f"{prompt_text(item.question)}{'<|step|>'.join(item.steps)}<|answer|>{item.answer}"
        prefix = [*tokenizer(chain, add_special_tokens=False).input_ids, marker]
        expected, expected_probs = greedy_reference(model, prefix, 96, tokenizer.pad_token_id)
        before = calls[0]
        new, probs = lookup_greedy(model, prefix, 96, eos, pool)
        passes += calls[0] - before
        written += len(new)
        assert new == expected
        torch.testing.assert_close(torch.tensor(probs), torch.tensor(expected_probs), atol=1e-5, rtol=0)
        assert new[-1] in eos or len(new) == 96
    assert passes * 2 < written, f"{passes} forward passes for {written} tokens: the drafts were not accepted"


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_any_model_gets_greedy_output_within_its_budget(family, tokenizer):
    model = make_hf_model(family, len(tokenizer), seed=3)
    prefix = tokenizer("one two three one two three one two", add_special_tokens=False).input_ids
    for budget in (1, 7, 30):
        expected, expected_probs = greedy_reference(model, prefix, budget, tokenizer.pad_token_id)
        new, probs = lookup_greedy(model, prefix, budget, stop_ids=set(), pool=prefix[:4])
        assert new == expected and len(new) == budget
        torch.testing.assert_close(torch.tensor(probs), torch.tensor(expected_probs), atol=1e-5, rtol=0)


def test_decoding_stops_at_a_stop_token_and_keeps_it(tokenizer):
    model = make_hf_model("llama", len(tokenizer), seed=3)
    prefix = tokenizer("one two three", add_special_tokens=False).input_ids
    free, _ = lookup_greedy(model, prefix, 12, stop_ids=set())
    stop = free[5]
    stopped, probs = lookup_greedy(model, prefix, 12, stop_ids={stop})
    assert stopped == free[: free.index(stop) + 1] and len(probs) == len(stopped)


@pytest.mark.parametrize("family", ["sage", "llama"])
def test_decoding_continues_from_the_keys_and_values_of_the_prefix(family, tokenizer):
    model = make_sage(tokenizer, seed=3) if family == "sage" else make_hf_model(family, len(tokenizer), seed=3)
    prefix = tokenizer("Tom has 3 apples<|step|>and 4 more", add_special_tokens=False).input_ids
    expected = lookup_greedy(model, prefix, 9, stop_ids=set())
    with torch.no_grad():
        cache = model(input_ids=torch.tensor([prefix[:-2]]), use_cache=True).cache
    new, probs = lookup_greedy(model, prefix, 9, stop_ids=set(), cache=cache)
    assert new == expected[0] and probs == pytest.approx(expected[1], abs=1e-6)
    with pytest.raises(ValueError, match="the prefix has"):
        lookup_greedy(model, prefix[:3], 9, stop_ids=set(), cache=cache)


def test_a_sliding_window_cache_is_refused_with_a_clear_error(tokenizer):
    model = make_hf_model("mistral", len(tokenizer))
    with pytest.raises(ValueError, match="sliding-window"):
        lookup_greedy(model, tokenizer("one two three").input_ids, 5, stop_ids=set())
