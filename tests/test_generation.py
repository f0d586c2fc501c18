"""Traced generation: same tokens as `generate`, records that agree with the model, steps, bad input."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from conftest import encode, make_hf_model, make_sage
from sagenano.attention import head_groups
from sagenano.decoding import batch_decode, token_char_ends
from sagenano.generation import (
    ReasoningTrace,
    _hooks,
    _Recorder,
    _replay,
    _tokenize,
    trace_generate,
)
from sagenano.lookup_decoding import lookup_applies
from sagenano.steps import segment_steps

PROMPT = "If 3x + 2 = 14, what is x?"
FAMILIES = ["sage", "gpt2", "llama", "qwen2", "mistral"]


def build(family: str, tokenizer):
    return make_sage(tokenizer) if family == "sage" else make_hf_model(family, len(tokenizer))


def plain_greedy(model, tokenizer, prompt: str, new: int) -> torch.Tensor:
    inputs = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=new, do_sample=False)
    return out[0, inputs.input_ids.shape[1] :]


@pytest.mark.parametrize("family", FAMILIES)
def test_traced_tokens_equal_plain_greedy_generate(family, tokenizer):
    model = build(family, tokenizer)
    assert model.config._attn_implementation == "sdpa"
    reference = plain_greedy(model, tokenizer, PROMPT, 24)
    trace = trace_generate(model, tokenizer, PROMPT, max_new_tokens=24)
    assert torch.equal(trace.token_ids, reference)
    assert model.config._attn_implementation == "sdpa", "the attention implementation is restored afterwards"


@pytest.mark.parametrize("family", FAMILIES)
def test_records_agree_with_a_full_forward_pass(family, tokenizer):
    model = build(family, tokenizer)
    trace = trace_generate(model, tokenizer, PROMPT, max_new_tokens=12, top_k=4)
    full_ids = torch.cat([trace.prompt_ids, trace.token_ids])[None]
    P, T = len(trace.prompt_ids), trace.num_tokens
    logprobs = model(full_ids).logits[0, P - 1 : P + T - 1].log_softmax(-1)  # predicts each generated token
    torch.testing.assert_close(trace.logprobs, logprobs.gather(1, trace.token_ids[:, None])[:, 0], atol=1e-4, rtol=0)
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    torch.testing.assert_close(trace.entropies, entropy, atol=1e-4, rtol=0)
    top = logprobs.topk(4, dim=-1)
    torch.testing.assert_close(trace.topk_logprobs, top.values, atol=1e-4, rtol=0)
    assert torch.equal(trace.topk_ids[:, 0], trace.token_ids), "greedy picks the top-1 token"
    assert trace.topk_tokens[0][0] == trace.tokens[0] == tokenizer.decode([int(trace.token_ids[0])])


@pytest.mark.parametrize("family", ["sage", "llama", "gpt2"])
def test_attention_summary_and_full_maps_match_output_attentions(family, tokenizer):
    model = build(family, tokenizer)
    trace = trace_generate(model, tokenizer, PROMPT, max_new_tokens=8, attention="full")
    P, T = len(trace.prompt_ids), trace.num_tokens
    full_ids = torch.cat([trace.prompt_ids, trace.token_ids[:-1]])[None]  # N = P + T - 1 positions
    model.set_attn_implementation("eager")
    reference = torch.stack(model(full_ids, output_attentions=True).attentions)[:, 0]  # (L, H, N, N)
    torch.testing.assert_close(trace.attention_maps, reference, atol=1e-5, rtol=0)
    groups = model.config.head_groups if family == "sage" else {"all": reference.shape[1]}
    assert trace.head_groups == list(groups)
    L, G = reference.shape[0], len(groups)
    assert trace.attention.shape == (T, L, G, P + T - 1)
    first_group = reference[:, : next(iter(groups.values()))].mean(1)  # (L, N, N)
    rows = first_group[:, P - 1 : P + T - 1].transpose(0, 1)  # (T, L, N): the row that predicts each token
    torch.testing.assert_close(trace.attention[:, :, 0].float(), rows, atol=2e-3, rtol=0)  # stored in fp16
    sums = trace.attention.float().sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-2, rtol=0)


def test_hidden_states_on_request(tokenizer):
    model = make_sage(tokenizer)
    trace = trace_generate(model, tokenizer, PROMPT, max_new_tokens=6, hidden_states=True, attention="none")
    assert trace.attention is None and trace.attention_maps is None
    full_ids = torch.cat([trace.prompt_ids, trace.token_ids[:-1]])[None]
    reference = torch.stack(model(full_ids, output_hidden_states=True).hidden_states)[:, 0]
    torch.testing.assert_close(trace.hidden_states, reference, atol=1e-5, rtol=0)
    assert trace_generate(model, tokenizer, PROMPT, max_new_tokens=2).hidden_states is None


@pytest.mark.parametrize("family", ["sage", "llama"])
def test_batch_of_prompts_equals_one_by_one(family, tokenizer):
    model = build(family, tokenizer)
    prompts = [PROMPT, "Tom has 3 apples and buys 4 more. How many apples does he have now?"]
    traces = trace_generate(model, tokenizer, prompts, max_new_tokens=10)
    assert isinstance(traces, list) and len(traces) == 2
    for prompt, trace in zip(prompts, traces, strict=True):
        single = trace_generate(model, tokenizer, prompt, max_new_tokens=10)
        assert torch.equal(trace.token_ids, single.token_ids)
        assert torch.equal(trace.prompt_ids, encode(tokenizer, prompt)[0])
        torch.testing.assert_close(trace.logprobs, single.logprobs, atol=1e-4, rtol=0)
        assert trace.attention.shape == single.attention.shape  # padding is stripped


def test_sampling_is_reproducible_with_a_seed(tokenizer):
    model = make_sage(tokenizer)
    a = trace_generate(model, tokenizer, PROMPT, max_new_tokens=16, do_sample=True, seed=7)
    b = trace_generate(model, tokenizer, PROMPT, max_new_tokens=16, do_sample=True, seed=7)
    c = trace_generate(model, tokenizer, PROMPT, max_new_tokens=16, do_sample=True, seed=8)
    greedy = trace_generate(model, tokenizer, PROMPT, max_new_tokens=16)
    assert torch.equal(a.token_ids, b.token_ids)
    assert not torch.equal(a.token_ids, c.token_ids)
    assert not torch.equal(a.token_ids, greedy.token_ids)


def test_stop_strings_and_finish_reasons(tokenizer):
    model = make_sage(tokenizer)
    free = trace_generate(model, tokenizer, PROMPT, max_new_tokens=20)
    assert free.finish_reason == "length" and free.num_tokens == 20
    stop = free.tokens[5]  # a token the model is known to produce at step 5
    first = free.tokens.index(stop)
    stopped = trace_generate(model, tokenizer, PROMPT, max_new_tokens=20, stop_strings=[stop])
    assert stopped.finish_reason == "stop_string"
    assert torch.equal(stopped.token_ids, free.token_ids[: first + 1])
    assert stopped.text.endswith(stop)


def test_eos_ends_the_trace(tokenizer):
    model = make_sage(tokenizer)
    free = trace_generate(model, tokenizer, PROMPT, max_new_tokens=6)
    model.generation_config.eos_token_id = int(free.token_ids[3])  # pretend that token ends a sequence
    ended = trace_generate(model, tokenizer, PROMPT, max_new_tokens=6)
    assert ended.finish_reason == "eos"
    assert torch.equal(ended.token_ids, free.token_ids[: free.tokens.index(free.tokens[3]) + 1])
    assert ended.text == tokenizer.decode(ended.token_ids[:-1]), "the end-of-sequence token is not in the text"


def test_chat_template_is_applied_when_present(tokenizer):
    model = make_hf_model("qwen2", len(tokenizer))
    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)  # a copy we may change
    tokenizer.chat_template = "{% for m in messages %}User: {{ m['content'] }}\n{% endfor %}Assistant:"
    trace = trace_generate(model, tokenizer, PROMPT, max_new_tokens=4)
    assert trace.prompt == f"User: {PROMPT}\nAssistant:"
    assert torch.equal(trace.prompt_ids, encode(tokenizer, trace.prompt)[0])
    plain = trace_generate(model, tokenizer, PROMPT, max_new_tokens=4, chat=False)
    assert plain.prompt == PROMPT


def test_to_dict_is_json_ready(tokenizer):
    import json

    trace = trace_generate(make_sage(tokenizer), tokenizer, PROMPT, max_new_tokens=5, top_k=3)
    data = json.loads(json.dumps(trace.to_dict()))
    assert len(data["tokens"]) == 5 and len(data["tokens"][0]["top_k"]) == 3
    assert data["steps"] and {"mean_prob", "min_prob", "entropy"} <= set(data["steps"][0])
    assert 0.0 <= data["tokens"][0]["normalized_entropy"] <= 1.0 + 1e-6
    assert math.isclose(data["tokens"][0]["logprob"], float(trace.logprobs[0]), rel_tol=1e-6)


def test_max_new_tokens_is_cut_to_the_context(tokenizer):
    model = make_sage(tokenizer, max_position_embeddings=32)
    prompt_len = len(encode(tokenizer, PROMPT)[0])
    with pytest.warns(UserWarning, match="does not fit the context"):
        trace = trace_generate(model, tokenizer, PROMPT, max_new_tokens=100)
    assert trace.num_tokens == 32 - prompt_len


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(prompts=""), "empty"),
        (dict(prompts="   \n"), "empty"),
        (dict(prompts=[]), "empty list"),
        (dict(prompts="word " * 400), "longer|context"),
        (dict(prompts=PROMPT, max_new_tokens=0), "max_new_tokens"),
        (dict(prompts=PROMPT, step_strategy="paragraphs"), "unknown step strategy"),
        (dict(prompts=PROMPT, attention="some"), "attention must be"),
        (dict(prompts=PROMPT, chat=True), "no chat template"),
    ],
)
def test_bad_input_is_a_clear_error(tokenizer, kwargs, message):
    model = make_sage(tokenizer)
    with pytest.raises(ValueError, match=message):
        trace_generate(model, tokenizer, max_new_tokens=kwargs.pop("max_new_tokens", 4), **kwargs)


# --- step segmentation --------------------------------------------------------------------------


def char_ends_of(pieces: list[str]) -> list[int]:
    ends, total = [], 0
    for piece in pieces:
        total += len(piece)
        ends.append(total)
    return ends


def test_steps_by_markers_lines_and_sentences():
    pieces = ["Step 1:", " 3x", " =", " 12", ".\n", "Step 2:", " x", " =", " 4", "."]
    text = "".join(pieces)
    ends = char_ends_of(pieces)
    steps = segment_steps(text, ends, "auto")
    assert [s.text for s in steps] == ["Step 1: 3x = 12.", "Step 2: x = 4."]
    assert [(s.token_start, s.token_end) for s in steps] == [(0, 5), (5, 10)]
    assert [s.text for s in segment_steps(text, ends, "lines")] == ["Step 1: 3x = 12.", "Step 2: x = 4."]
    sentences = segment_steps(
        "First we add. Then we divide! Done", char_ends_of(["First we add.", " Then we divide!", " Done"])
    )
    assert [s.text for s in sentences] == ["First we add.", "Then we divide!", "Done"]
    assert [(s.token_start, s.token_end) for s in sentences] == [(0, 1), (1, 2), (2, 3)]


def test_steps_cover_text_before_the_first_marker():
    text = "Let us solve it. Step 1: subtract 2. Step 2: divide by 3."
    steps = segment_steps(text, char_ends_of(list(text)), "markers")
    assert [s.text for s in steps] == ["Let us solve it.", "Step 1: subtract 2.", "Step 2: divide by 3."]
    assert [(s.token_start, s.token_end) for s in steps] == [(0, 16), (17, 36), (37, 57)]


def test_trace_steps_partition_the_tokens(tokenizer):
    trace: ReasoningTrace = trace_generate(make_sage(tokenizer), tokenizer, PROMPT, max_new_tokens=30)
    assert trace.steps, "a non-empty chain has at least one step"
    for step in trace.steps:
        assert 0 <= step.token_start < step.token_end <= trace.num_tokens
        assert trace.text[step.char_start : step.char_end] == step.text


def test_steps_by_sage_step_tokens():
    pieces = ["12", " +", " 7", " =", " 19", "<|step|>", "19", " -", " 4", " =", " 15", "<|answer|>", "15"]
    text = "".join(pieces)
    steps = segment_steps(text, char_ends_of(pieces))  # auto picks the step tokens
    assert [s.text for s in steps] == ["12 + 7 = 19", "19 - 4 = 15", "15"]
    assert [(s.token_start, s.token_end) for s in steps] == [(0, 5), (6, 11), (12, 13)]


def test_records_do_not_depend_on_how_many_steps_are_reduced_at_once(tokenizer):
    """The recorder reduces logits a chunk of steps at a time; one step per chunk gives the same records."""
    model = make_hf_model("llama", len(tokenizer))
    inputs, pad_id = _tokenize(tokenizer, [PROMPT, "What is 7 + 5?"], model)  # left-padded
    every_step, at_once = _Recorder(top_k=3, chunk_bytes=1), _Recorder(top_k=3)
    with _hooks(every_step, model), _hooks(at_once, model):
        sequences = model.generate(**inputs, max_new_tokens=10, do_sample=False, pad_token_id=pad_id)
    for recorder in (every_step, at_once):
        recorder.finish(sequences[:, -1])
    assert len(every_step.entropies) == 10 and len(every_step.pending_logits) == 0
    for name in ("chosen_logprobs", "entropies", "topk_values"):
        torch.testing.assert_close(getattr(every_step, name), getattr(at_once, name), atol=1e-4, rtol=0)
    assert torch.equal(every_step.topk_ids, at_once.topk_ids)
    chosen = sequences[:, inputs["input_ids"].shape[1] :].T  # (T, B)
    assert torch.equal(every_step.topk_ids[..., 0], chosen), "greedy: the chosen token is the top-1"


def test_a_masked_token_adds_nothing_to_the_entropy():
    """Logits of -inf (a masked token) must give the entropy of the other tokens, not NaN."""
    logits = torch.tensor([[[0.0, 0.0, float("-inf"), 0.0]]])
    recorder = _Recorder(top_k=2)
    recorder.on_model_output(None, (), SimpleNamespace(logits=logits))
    recorder.finish(torch.tensor([1]))
    assert recorder.entropies.item() == pytest.approx(math.log(3))
    assert recorder.chosen_logprobs.item() == pytest.approx(-math.log(3))


def test_batch_decode_equals_the_tokenizers(tokenizer):
    ids = tokenizer("Step 1: 3x = 12 <|step|> x = 4 <|answer|> 4").input_ids
    prefixes = [ids[: i + 1] for i in range(len(ids))]
    assert batch_decode(tokenizer, prefixes) == tokenizer.batch_decode(prefixes)
    assert token_char_ends(tokenizer, ids) == [len(tokenizer.decode(p)) for p in prefixes]


def test_the_recorder_refuses_outputs_it_cannot_pair_with_tokens():
    """Two model outputs before any fed token (e.g. a chunked prefill) would pair logits with the wrong tokens."""
    recorder = _Recorder(top_k=2)
    for _ in range(2):
        recorder.on_model_output(None, (), SimpleNamespace(logits=torch.zeros(1, 1, 4)))
    with pytest.raises(RuntimeError, match="one forward pass"):
        recorder.finish(torch.tensor([1]))


@pytest.mark.parametrize("family", FAMILIES)
def test_summary_replay_from_the_generation_cache_equals_a_full_replay(family, tokenizer):
    """One prompt: the replay pass reads the prompt's keys and values from generation's cache and runs over the
    generated positions only; its attention rows equal those of a full pass over prompt and chain."""
    model = build(family, tokenizer)
    fed: list[int] = []
    hook = model.get_input_embeddings().register_forward_pre_hook(lambda module, args: fed.append(args[0].shape[1]))
    try:
        trace = trace_generate(model, tokenizer, PROMPT, max_new_tokens=12)
    finally:
        hook.remove()
    P, T = len(trace.prompt_ids), trace.num_tokens
    # Mistral's sliding-window cache layers may not hold every position: its replay is a full pass.
    assert fed[-1] == (P + T - 1 if family == "mistral" else T), "the replay fed only the predicting positions"
    ids = torch.cat([trace.prompt_ids, trace.token_ids[:-1]])
    full = _replay(model, ids, T, head_groups(model), "summary", False)
    assert full.summary.shape == trace.attention.shape == (T, model.config.num_hidden_layers, len(trace.head_groups),
                                                           P + T - 1)  # fmt: skip
    torch.testing.assert_close(trace.attention.float(), full.summary.float(), atol=2e-3, rtol=0)


# --- lookup decoding ----------------------------------------------------------------------------


def count_forwards(model) -> list[int]:
    calls = [0]
    model.register_forward_hook(lambda module, args, output: calls.__setitem__(0, calls[0] + 1))
    return calls


def assert_same_trace(lookup: ReasoningTrace, plain: ReasoningTrace) -> None:
    assert torch.equal(lookup.token_ids, plain.token_ids) and lookup.text == plain.text
    assert lookup.finish_reason == plain.finish_reason
    assert [s.text for s in lookup.steps] == [s.text for s in plain.steps]
    for name in ("logprobs", "entropies", "topk_logprobs"):
        torch.testing.assert_close(getattr(lookup, name), getattr(plain, name), atol=1e-4, rtol=0)
    assert torch.equal(lookup.topk_ids[:, 0], plain.topk_ids[:, 0])
    torch.testing.assert_close(lookup.attention.float(), plain.attention.float(), atol=2e-3, rtol=0)


@pytest.mark.parametrize("family", ["sage", "gpt2", "llama", "qwen2"])
def test_lookup_traces_what_generate_traces(family, tokenizer):
    model = build(family, tokenizer)
    assert lookup_applies(model)
    plain = trace_generate(model, tokenizer, PROMPT, max_new_tokens=40, top_k=4)
    assert_same_trace(trace_generate(model, tokenizer, PROMPT, max_new_tokens=40, top_k=4, lookup=True), plain)


def test_lookup_traces_the_shipped_models_chains_in_fewer_passes():
    """Held-out questions: the chain, its records and attention as `generate` gives them, in fewer forward passes
    (each chain's replay pass counted)."""
    from sagenano.data import generate_items
    from sagenano.loading import load_model

    loaded = load_model()
    model, tokenizer = loaded.model, loaded.tokenizer  # the tokenizer that writes the model's prompt
    calls = count_forwards(model)
    passes = tokens = 0
    for item in [*generate_items("linear_equation", 2, 5, "heldout"), *generate_items("logic", 2, 5, "heldout")]:
        plain = trace_generate(model, tokenizer, item.question, max_new_tokens=160)
        before = calls[0]
        traced = trace_generate(model, tokenizer, item.question, max_new_tokens=160, lookup=True)
        passes += calls[0] - before
        tokens += traced.num_tokens
        assert_same_trace(traced, plain)
        assert traced.finish_reason == "eos"
    assert passes < 0.8 * tokens, f"{passes} forward passes for {tokens} tokens"


def test_lookup_is_refused_where_it_would_not_give_generates_tokens(tokenizer):
    mistral = make_hf_model("mistral", len(tokenizer))  # a sliding-window cache, which lookup cannot crop
    assert not lookup_applies(mistral)
    with pytest.raises(ValueError, match="lookup_applies"):
        trace_generate(mistral, tokenizer, PROMPT, max_new_tokens=4, lookup=True)
    llama = make_hf_model("llama", len(tokenizer))
    llama.generation_config.repetition_penalty = 1.3  # a logits processor that lookup decoding does not apply
    assert not lookup_applies(llama)
    llama.generation_config.repetition_penalty = 1.0
    llama.generation_config.temperature = 0.7  # sampling settings leave greedy decoding alone
    assert lookup_applies(llama)
    for key, value in (("forced_eos_token_id", 0), ("no_repeat_ngram_size", 1), ("min_new_tokens", 1)):
        setattr(llama.generation_config, key, value)  # each adds a processor at these values
        assert not lookup_applies(llama), key
        setattr(llama.generation_config, key, None)
    assert lookup_applies(llama)
    for kwargs in (dict(do_sample=True), dict(stop_strings=["."]), dict(forced=[5, 6]), dict(prompts=[PROMPT] * 2)):
        with pytest.raises(ValueError, match="lookup needs"):
            trace_generate(llama, tokenizer, **{"prompts": PROMPT, **kwargs}, max_new_tokens=4, lookup=True)
