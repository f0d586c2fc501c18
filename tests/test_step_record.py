"""The Table 1 step record on tiny SAGE, Llama and GPT-2 models: shapes, values checked independently, files."""

from __future__ import annotations

import copy
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers.models.gpt2.modeling_gpt2 as gpt2_modeling
import transformers.models.llama.modeling_llama as llama_modeling

import sagenano.model as sage_modeling
from conftest import make_hf_model, make_sage
from sagenano.attention import attention_modules, eager_attention
from sagenano.decoding import Chain
from sagenano.generation import trace_generate
from sagenano.inverse import StepRecord, explain, record_step
from sagenano.inverse import step_record as record_module
from sagenano.inverse.measure import embeddings_require_grad

QUESTION = "Tom has 3 apples and buys 4 more. How many apples?"
MAX_NEW_TOKENS = 16
EAGER_MODULES = {"sage": sage_modeling, "llama": llama_modeling, "gpt2": gpt2_modeling}
SAGE_NANO = str(Path(sys.executable).with_name("sage-nano"))


def recut(report, bounds=(0, 6, 11)):
    """The report with its chain cut into several steps, so that steps start inside the chain too."""
    total = len(report.tokens)
    edges = [*(b for b in bounds if b < total), total]
    steps = [
        report.steps[0].model_copy(update=dict(index=i, token_start=a, token_end=b))
        for i, (a, b) in enumerate(itertools.pairwise(edges))
    ]
    return report.model_copy(update={"steps": steps})


@pytest.fixture(scope="module", params=list(EAGER_MODULES))
def recorded(request, tokenizer):
    family = request.param
    model = make_sage(tokenizer) if family == "sage" else make_hf_model(family, len(tokenizer))
    report = explain(
        model, tokenizer, QUESTION, max_new_tokens=MAX_NEW_TOKENS, chat=False, validate=False, rollouts=False,
        max_decision_points=3, alternatives=3, min_alternative_prob=0.0,
    )  # fmt: skip
    report = recut(report)
    records = [record_step(model, tokenizer, report, i) for i in range(len(report.steps))]
    return family, model, report, records


def chain_of(report) -> Chain:
    return Chain(torch.tensor(report.prompt_ids), torch.tensor([t.id for t in report.tokens]))


# --- shapes ---------------------------------------------------------------------------------------------


def test_shapes_and_dimension_names_follow_the_report(recorded):
    _, model, report, records = recorded
    assert len(report.steps) == 3 and len(records) == 3
    layers, prompt_len = len(attention_modules(model)), len(report.prompt_ids)
    for record, step in zip(records, report.steps, strict=True):
        tokens = range(step.token_start, step.token_end)
        context = prompt_len + step.token_end - 1
        assert record.positions == [prompt_len - 1 + t for t in tokens]
        expected = {"layer": layers, "head": 4, "query": len(tokens), "key": context}
        assert record.attention.shape == expected and record.attention_grad.shape == expected
        assert record.decision_scores.dims == ("token",)
        assert record.decision_scores.data.tolist() == pytest.approx([report.tokens[t].entropy for t in tokens])
        assert record.value_contributions.shape == {"layer": layers, "key": context, "hidden": 64}
        assert record.alternative_attention.dims == ("alternative", "layer", "head", "key")


def test_attention_rows_are_distributions_and_equal_the_traced_maps(recorded, tokenizer):
    _, model, report, records = recorded
    trace = trace_generate(model, tokenizer, QUESTION, max_new_tokens=MAX_NEW_TOKENS, attention="full", chat=False)
    assert trace.token_ids.tolist() == [t.id for t in report.tokens], "greedy regeneration is the report's chain"
    for record in records:
        attention = record.attention.data
        torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[:-1]), atol=1e-4, rtol=0)
        for row, position in enumerate(record.positions):
            assert not attention[:, :, row, position + 1 :].any(), "nothing after the query's own position"
        keys = attention.shape[-1]
        reference = trace.attention_maps[:, :, record.positions, :keys]
        torch.testing.assert_close(attention, reference, atol=1e-4, rtol=0)


# --- the attention gradient ----------------------------------------------------------------------------------


def step_nll(model, chain: Chain, tokens: range) -> torch.Tensor:
    logp = model(input_ids=chain.inputs[None], use_cache=False).logits[0].double().log_softmax(-1)
    return -logp[chain.predicting(tokens)].gather(1, chain.token_ids[list(tokens), None]).sum()


def test_attention_grad_equals_an_independent_autograd_pass(recorded):
    _, model, report, records = recorded
    chain = chain_of(report)
    for record, step in zip(records, report.steps, strict=True):
        grad = record.attention_grad.data
        assert torch.isfinite(grad).all() and grad.abs().max() > 0
        with eager_attention(model, True), embeddings_require_grad(model):
            out = model(input_ids=chain.inputs[None], use_cache=False, output_attentions=True)
            logp = out.logits[0].float().log_softmax(-1)
            tokens = list(range(step.token_start, step.token_end))
            nll = -logp[chain.predicting(tokens)].gather(1, chain.token_ids[tokens, None]).sum()
            grads = torch.autograd.grad(nll, out.attentions)
        keys = grad.shape[-1]
        reference = torch.stack([g[0][:, record.positions, :keys] for g in grads])
        torch.testing.assert_close(grad, reference, atol=1e-5, rtol=1e-4)


def test_attention_grad_matches_finite_differences(recorded, tokenizer, monkeypatch):
    """Scaling one attention weight by (1 + δ) changes the step NLL by δ · w · dNLL/dw (float64)."""
    family, model, report, _ = recorded
    model64 = copy.deepcopy(model).double()
    step = report.steps[1]
    record = record_step(model64, tokenizer, report, 1)
    chain, tokens = chain_of(report), range(step.token_start, step.token_end)
    effect = record.attention_grad.data * record.attention.data
    layer, head, row, key = (int(i) for i in torch.unravel_index(effect.abs().argmax(), effect.shape))
    original = EAGER_MODULES[family].eager_attention_forward

    def nll_with(delta: float) -> float:
        def attend(module, query, key_states, value, mask, *args, **kwargs):
            out, weights = original(module, query, key_states, value, mask, *args, **kwargs)
            if module.layer_idx == layer:
                groups = getattr(module, "num_key_value_groups", 1)
                position = record.positions[row]
                out = out.clone()  # the output is linear in the weights: add δ · w · v for the one weight
                out[0, position, head] += delta * weights[0, head, position, key] * value[0, head // groups, key]
            return out, weights

        monkeypatch.setattr(EAGER_MODULES[family], "eager_attention_forward", attend)
        with torch.no_grad(), eager_attention(model64, True):
            return float(step_nll(model64, chain, tokens))

    delta = 1e-2  # softmax runs in float32 even in a float64 model: a step well above its rounding
    numeric = (nll_with(delta) - nll_with(-delta)) / (2 * delta)
    assert abs(float(effect[layer, head, row, key])) > 1e-6
    assert numeric == pytest.approx(float(effect[layer, head, row, key]), rel=5e-4)


# --- value contributions -----------------------------------------------------------------------------------


def test_value_contributions_sum_to_the_attention_output_at_the_queries(recorded):
    family, model, report, records = recorded
    chain = chain_of(report)
    layers = [module for _, module, _ in attention_modules(model)]
    projections = [m.o_proj if family != "gpt2" else m.c_proj for m in layers]
    inputs = []
    handles = [p.register_forward_pre_hook(lambda module, args: inputs.append(args[0])) for p in projections]
    try:
        with torch.no_grad():
            model(input_ids=chain.inputs[None], use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    for record in records:
        contributions = record.value_contributions.data
        assert torch.isfinite(contributions).all() and contributions.abs().max() > 0
        for layer, (x, projection) in enumerate(zip(inputs, projections, strict=True)):
            summed = x[0, record.positions].sum(0).clone()
            if family == "sage":
                summed[layers[layer].num_heads * layers[layer].head_dim :] = 0  # the concept heads' part
            with torch.no_grad():
                expected = projection(summed) - (projection.bias if projection.bias is not None else 0)
            torch.testing.assert_close(contributions[layer].sum(0), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_value_contributions_cover_the_llama_family(family, tokenizer):
    model = make_hf_model(family, len(tokenizer))
    report = explain(model, tokenizer, QUESTION, max_new_tokens=6, chat=False, validate=False, rollouts=False)
    record = record_step(model, tokenizer, report, 0)
    assert record.value_contributions is not None and torch.isfinite(record.value_contributions.data).all()


def test_an_unsupported_family_records_without_value_contributions(tokenizer, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="value contributions are not supported for Linear"):
        record_module.value_source(torch.nn.Linear(2, 2))

    def unsupported(module):
        raise ValueError(f"value contributions are not supported for {type(module).__name__}")

    monkeypatch.setattr(record_module, "value_source", unsupported)
    model = make_hf_model("llama", len(tokenizer))
    report = explain(model, tokenizer, QUESTION, max_new_tokens=6, chat=False, validate=False, rollouts=False)
    record = record_step(model, tokenizer, report, 0)
    assert record.value_contributions is None and record.attention_grad.data.abs().max() > 0
    record.to_safetensors(tmp_path / "r.safetensors")
    assert StepRecord.from_safetensors(tmp_path / "r.safetensors").value_contributions is None


# --- alternatives -----------------------------------------------------------------------------------------------


def test_alternative_attention_is_the_next_row_on_each_forced_branch(recorded):
    _, model, report, records = recorded
    chain, prompt_len = chain_of(report), len(report.prompt_ids)
    layers = len(attention_modules(model))
    with_points = 0
    for record, step in zip(records, report.steps, strict=True):
        points = [p for p in report.decision_points if step.token_start <= p.position < step.token_end]
        rows = record.alternative_attention.data
        if not points:
            assert record.decision_point is None and rows.shape == (0, layers, 4, 0)
            continue
        with_points += 1
        point = points[0]
        assert record.decision_point == point.position
        assert record.alternative_ids == [a.token_id for a in point.alternatives]
        assert rows.shape == (len(point.alternatives), layers, 4, prompt_len + point.position + 1)
        prefix = torch.cat([chain.prompt_ids, chain.token_ids[: point.position]])
        for a, token_id in enumerate(record.alternative_ids):
            ids = torch.cat([prefix, torch.tensor([token_id])])[None]
            with torch.no_grad(), eager_attention(model, True):
                out = model(input_ids=ids, use_cache=False, output_attentions=True)
            reference = torch.stack([w[0, :, -1] for w in out.attentions]).float()
            torch.testing.assert_close(rows[a], reference, atol=1e-5, rtol=1e-4)
    assert with_points >= 1, "random models are uncertain: some step holds a decision point"


# --- files and errors ---------------------------------------------------------------------------------------------


def test_a_record_round_trips_through_safetensors_exactly(recorded, tmp_path):
    _, _, _, records = recorded
    path = tmp_path / "step.safetensors"
    for record in records:
        record.to_safetensors(path)  # the second and third overwrite the first
        loaded = StepRecord.from_safetensors(path)
        for name in ("attention", "attention_grad", "value_contributions", "decision_scores", "alternative_attention"):
            original, back = getattr(record, name), getattr(loaded, name)
            assert back.dims == original.dims and torch.equal(back.data, original.data), name
        assert (loaded.step, loaded.positions) == (record.step, record.positions)
        assert (loaded.decision_point, loaded.alternative_ids) == (record.decision_point, record.alternative_ids)
    assert os.listdir(tmp_path) == ["step.safetensors"], "no temporary file is left behind"


def test_a_file_that_is_not_a_record_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not a step record"):
        StepRecord.from_safetensors(tmp_path / "other.safetensors")


def test_a_step_out_of_range_is_refused_with_the_valid_range(recorded, tokenizer):
    _, model, report, _ = recorded
    for bad in (-1, 3, 99, "1", True):
        with pytest.raises(ValueError, match=r"valid steps are 0\.\.2"):
            record_step(model, tokenizer, report, bad)


# --- the command line ---------------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}
    return subprocess.run([SAGE_NANO, *args], capture_output=True, text=True, env=env, timeout=300)


def test_explain_writes_a_step_record_on_request(tmp_path):
    out = tmp_path / "record.safetensors"
    common = ["explain", "2 + 2 = ?", "--model", "preset:pico", "--max-new-tokens", "6", "--no-validate"]
    result = run_cli(*common, "--record-step", "1", "--record-out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(out) in result.stdout
    record = StepRecord.from_safetensors(out)
    assert record.step == 0 and record.attention.dims == ("layer", "head", "query", "key")
    bad = run_cli(*common, "--record-step", "99")
    assert bad.returncode == 2 and "out of range" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr
