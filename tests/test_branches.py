"""Shared-prefix attention for rollouts: the same attention as over left-padded copies, the same rollouts."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import Cache

from conftest import make_hf_model, make_sage
from sagenano.inverse import alternatives
from sagenano.inverse.alternatives import branch_rollouts
from sagenano.inverse.branches import _ACTIVE, BranchLayer, _attend, branch_attention_applies
from sagenano.inverse.validation import _greedy_agreement

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def tiny(family: str, tokenizer):
    return make_sage(tokenizer) if family == "sage" else make_hf_model(family, len(tokenizer))


@pytest.mark.parametrize("query_heads", [4, 8])  # 8: two query heads per key-value head (grouped-query attention)
def test_attention_over_the_shared_prefix_equals_attention_over_each_rows_own_copy(query_heads):
    torch.manual_seed(0)
    heads, size, width, own, q = 4, 8, 11, 5, 3
    lengths = [11, 4, 7]
    prefix_keys, prefix_values = torch.randn(1, heads, width, size), torch.randn(1, heads, width, size)
    layer = BranchLayer(prefix_keys, prefix_values, lengths, room=own)
    keys, values = torch.randn(3, heads, own, size), torch.randn(3, heads, own, size)
    layer.update(keys, values)
    query = torch.randn(3, query_heads, q, size)
    # The left-padded keep-mask the model would build: the last q of the own positions are causal among themselves.
    mask = torch.ones(3, 1, q, max(lengths) + own, dtype=torch.bool)
    mask[..., -q:] = torch.ones(q, q, dtype=torch.bool).tril()
    token = _ACTIVE.set(Cache(layers=[layer]))
    try:
        got, weights = _attend(type("Attention", (), {"layer_idx": 0})(), query, keys, values, mask, scaling=0.3)
    finally:
        _ACTIVE.reset(token)
    assert weights is None and got.shape == (3, q, query_heads, size)
    group = query_heads // heads
    for r, k in enumerate(lengths):
        row_keys = torch.cat([prefix_keys[0, :, :k], keys[r]], 1).repeat_interleave(group, 0)
        row_values = torch.cat([prefix_values[0, :, :k], values[r]], 1).repeat_interleave(group, 0)
        reference = torch.nn.functional.scaled_dot_product_attention(
            query[r], row_keys, row_values, attn_mask=mask[r, :, :, -(k + own) :].expand(query_heads, -1, -1), scale=0.3
        )
        torch.testing.assert_close(got[r].transpose(0, 1), reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["sage", "llama", "qwen2", "gpt2"])
def test_rollouts_with_shared_prefix_attention_equal_left_padded_copies_and_keep_one_prefix(family, tokenizer,
                                                                                            monkeypatch):  # fmt: skip
    model = tiny(family, tokenizer)
    assert branch_attention_applies(model)
    implementation = model.config._attn_implementation
    sequence = torch.tensor(tokenizer(QUESTION + " 3 + 4 = 7 apples.").input_ids)
    branches = [(3, 17), (len(sequence) - 2, 40), (len(sequence) - 2, 41), (8, 17), (12, 90)]
    end = len(sequence) + 12
    caches = []
    original = alternatives.branch_cache
    monkeypatch.setattr(alternatives, "branch_cache", lambda *args: caches.append(original(*args)) or caches[-1])
    shared = branch_rollouts(model, sequence, branches, end)
    prefix = caches[0].layers[0].prefix_keys
    assert prefix.shape[0] == 1 and prefix.shape[-2] == len(sequence) - 2, "one copy of the longest branch prefix"
    assert model.config._attn_implementation == implementation, "the attention implementation is restored"
    monkeypatch.setattr(alternatives, "branch_attention_applies", lambda model: False)
    assert shared == branch_rollouts(model, sequence, branches, end)


def test_a_model_with_sliding_windows_keeps_left_padded_copies(tokenizer):
    assert not branch_attention_applies(make_hf_model("mistral", len(tokenizer)))


@pytest.mark.parametrize("attention", ["shared", "left-padded"])
def test_branches_far_apart_near_the_context_limit_are_rolled_out_in_batches_that_fit(attention, tokenizer,
                                                                                        monkeypatch):  # fmt: skip
    """A batch is as wide as its latest branch point plus its earliest branch's budget: near the end of a SAGE
    model's context that is more than the model takes, so such branches go in separate batches, each row as if
    alone."""
    if attention == "left-padded":
        monkeypatch.setattr(alternatives, "branch_attention_applies", lambda model: False)
    model = make_sage(tokenizer, max_position_embeddings=48)
    sequence = torch.tensor(tokenizer(QUESTION + " 3 + 4 = 7 apples, so he has 7 apples in all. " * 2).input_ids)[:40]
    assert len(sequence) == 40
    branches = [(38, 40), (4, 17), (36, 41), (6, 90)]
    assert alternatives._within_context(model, branches, 46) == [[1, 3], [2, 0]]
    together = branch_rollouts(model, sequence, branches, end=46)
    assert together == [branch_rollouts(model, sequence, [branch], end=46)[0] for branch in branches]
    # Validation's check of these rollouts batches them within the context too.
    rolled = [torch.cat([sequence[:k], torch.tensor(ids)]) for (k, _), ids in zip(branches, together, strict=True)]
    assert _greedy_agreement(model, rolled, [k for k, _ in branches]) == [True] * 4


def test_the_attention_is_registered_at_use_over_another_copys_function(tokenizer, monkeypatch):
    """Two versions of the package in one process register their own function under the same name (transformers'
    registry is global): each must run its own."""
    from transformers import AttentionInterface

    from sagenano.inverse.branches import NAME

    def stale(*args, **kwargs):
        raise AssertionError("another copy's attention ran")

    AttentionInterface.register(NAME, stale)
    model = tiny("llama", tokenizer)
    sequence = torch.tensor(tokenizer(QUESTION).input_ids)
    branches = [(4, 17), (len(sequence) - 1, 40)]
    shared = branch_rollouts(model, sequence, branches, len(sequence) + 6)
    monkeypatch.setattr(alternatives, "branch_attention_applies", lambda model: False)
    assert shared == branch_rollouts(model, sequence, branches, len(sequence) + 6)
