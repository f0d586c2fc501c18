"""`explain` on model families beyond Llama's shape: Phi-3 (its own input preparation), sliding-window attention shorter
than the chain (Mistral, Gemma 2), and attention outside transformers' attention interface (BLOOM, Falcon)."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from conftest import make_hf_model
from sagenano.decoding import eos_ids
from sagenano.generation import trace_generate
from sagenano.inverse import Report, explain
from sagenano.inverse.alternatives import branch_rollouts
from sagenano.inverse.answers import extract_answer
from sagenano.lookup_decoding import lookup_applies, lookup_greedy

QUESTION = "Tom has 3 apples and buys 4 more. How many apples?"
FAMILIES = ("phi3", "mistral_sliding", "gemma2", "bloom", "falcon")
SLIDING = ("mistral_sliding", "gemma2")


def forced_greedy(model, prefix: list[int], budget: int) -> list[int]:
    """`generate`'s greedy continuation of `prefix` (forced tokens included at its end), cut after the first
    end-of-sequence token: what a rollout must equal."""
    ids = torch.tensor([prefix])
    if budget > 0:
        ids = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=budget, do_sample=False,
                             pad_token_id=0)  # fmt: skip
    new = ids[0, len(prefix) :].tolist()
    eos = eos_ids(model)
    ends = [i for i, token in enumerate(new) if token in eos]
    return new[: ends[0] + 1] if ends else new


@pytest.fixture(scope="module", params=FAMILIES)
def explained(request, tokenizer):
    model = make_hf_model(request.param, len(tokenizer))
    implementation = model.config._attn_implementation
    # A random model spreads its probability over the whole vocabulary: no alternative reaches the default floor.
    report = explain(model, tokenizer, QUESTION, max_new_tokens=12, chat=False, max_decision_points=2, alternatives=2,
                     min_alternative_prob=0.0)  # fmt: skip
    return request.param, model, implementation, report


def test_explain_with_rollouts_gives_a_schema_valid_report(explained):
    family, model, implementation, report = explained
    jsonschema.validate(json.loads(report.to_json()), Report.json_schema())
    assert Report.from_json(report.to_json()) == report
    points = [*report.decision_points, *report.hesitations]
    assert points and all(a.ids for p in points for a in p.alternatives), "every alternative was rolled out"
    assert report.validation is not None and report.claims
    assert any(s.dependencies for s in report.steps), "the attention term of eq. 7 was read"
    assert model.config._attn_implementation == implementation, "the attention implementation is restored"
    if family in SLIDING:
        assert len(report.prompt_ids) + len(report.tokens) > model.config.sliding_window, "the window is shorter"


def test_rollouts_equal_forced_greedy_generate(explained, tokenizer):
    _, model, _, report = explained
    chain = [t.id for t in report.tokens]
    for point in [*report.decision_points, *report.hesitations]:
        for alternative in point.alternatives:
            prefix = report.prompt_ids + chain[: point.position] + [alternative.token_id]
            budget = report.options.max_new_tokens - point.position - 1
            assert alternative.ids == [alternative.token_id, *forced_greedy(model, prefix, budget)]
            assert alternative.answer == extract_answer(alternative.chain)


@pytest.mark.parametrize("family", SLIDING)
@pytest.mark.parametrize("reuse", [True, False])
def test_branches_inside_and_beyond_a_sliding_window_equal_forced_greedy_generate(family, reuse, tokenizer):
    """Branch points before the window's length and far past it, in one batch: each rollout equals `generate` from
    its own forced prefix (with the chain's keys and values cut to each prefix, or every row fed whole)."""
    model = make_hf_model(family, len(tokenizer))
    sequence = torch.tensor(tokenizer(QUESTION + " 3 + 4 = 7 apples, so he has 7 apples.").input_ids)
    assert len(sequence) > 3 * model.config.sliding_window
    branches = [(3, 17), (8, 40), (len(sequence) - 2, 41), (len(sequence) - 2, 90), (20, 17)]
    end = len(sequence) + 8
    rolled = branch_rollouts(model, sequence, branches, end, reuse_cache=reuse)
    for (k, token), rollout in zip(branches, rolled, strict=True):
        assert rollout == [token, *forced_greedy(model, [*sequence[:k].tolist(), token], end - k - 1)]


def test_phi3_lookup_decoding_equals_generate(tokenizer):
    """Phi-3's input preparation passes `logits_to_keep` on; lookup decoding (explain's generation) chooses its own."""
    model = make_hf_model("phi3", len(tokenizer))
    assert lookup_applies(model)
    prompt = tokenizer(QUESTION).input_ids
    tokens, _ = lookup_greedy(model, prompt, 16, eos_ids(model), pool=prompt)
    assert tokens == forced_greedy(model, prompt, 16)


@pytest.mark.parametrize("family", ["bloom", "falcon"])
@pytest.mark.parametrize("attention", ["summary", "full"])
def test_attention_of_models_outside_the_attention_interface_is_read(family, attention, tokenizer):
    """BLOOM and Falcon keep no table of their attention layers and choose their attention in their own code (Falcon
    stays on SDPA): their decoder layers' weights are read, one softmax row per query, and the implementation kept."""
    model = make_hf_model(family, len(tokenizer))
    implementation = model.config._attn_implementation
    trace = trace_generate(model, tokenizer, QUESTION, max_new_tokens=6, chat=False, attention=attention)
    prompt, new = len(trace.prompt_ids), trace.num_tokens
    assert trace.attention.shape == (new, model.config.num_hidden_layers, 1, prompt + new - 1)
    torch.testing.assert_close(trace.attention.float().sum(-1), torch.ones(new, 2, 1), atol=2e-3, rtol=0)
    if attention == "full":
        assert trace.attention_maps.shape == (2, 4, prompt + new - 1, prompt + new - 1)
        torch.testing.assert_close(trace.attention_maps.sum(-1), torch.ones(2, 4, prompt + new - 1))
    assert model.config._attn_implementation == implementation


@pytest.mark.parametrize("family", ["bloom", "falcon"])
def test_a_step_of_a_model_outside_the_attention_interface_is_recorded(family, tokenizer):
    from sagenano.inverse.step_record import record_step

    model = make_hf_model(family, len(tokenizer))
    report = explain(model, tokenizer, QUESTION, max_new_tokens=12, rollouts=False, validate=False)
    record = record_step(model, tokenizer, report, 0)
    rows = record.attention.data.sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-4), "attention rows of the step's queries sum to 1"


def test_a_model_whose_attention_layers_cannot_be_found_is_refused_with_advice_that_works(tokenizer):
    model = make_hf_model("bloom", len(tokenizer))
    model._no_split_modules = None  # as a custom model without transformers' tables would be
    with pytest.raises(ValueError, match=r"cannot find the attention layers of BloomForCausalLM.*_no_split_modules"):
        explain(model, tokenizer, QUESTION, max_new_tokens=4, chat=False, rollouts=False, validate=False)
    model._no_split_modules = ["BloomBlock"]  # the advice
    report = explain(model, tokenizer, QUESTION, max_new_tokens=4, chat=False, rollouts=False, validate=False)
    assert any(s.dependencies for s in report.steps)
