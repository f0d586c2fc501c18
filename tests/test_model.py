"""SageForCausalLM: shapes, cache, attention paths, save/load, presets, ablations, hooks, Auto classes."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, pipeline

from conftest import encode, make_sage, tiny_sage_config
from sagenano.config import ABLATION_SWITCHES, BOS_TOKEN_ID, PRESETS, SageConfig
from sagenano.data.format import prompt_text
from sagenano.loading import load_model
from sagenano.model import SageCausalLMOutput, SageForCausalLM, step_ids_from_input_ids
from sagenano.model_info import build_on_meta, parameter_breakdown
from sagenano.train.batches import IGNORE
from sagenano.train.losses import consistency_sum, steps_to_hide

QUESTION = "<|question|>If 3x + 2 = 14, what is x?<|step|>3x = 12<|step|>x = 4<|answer|>4"


def test_forward_backward_shapes(sage, tokenizer):
    ids = encode(tokenizer, QUESTION).repeat(2, 1)
    B, T = ids.shape
    out = sage(
        ids, labels=ids, run_inverse=True, hidden_step=torch.tensor([1, 2]), output_hidden_states=True,
        output_attentions=True,
    )  # fmt: skip
    V, D, L = sage.config.vocab_size, sage.config.hidden_size, sage.config.num_hidden_layers
    assert out.logits.shape == (B, T, V)
    assert out.reconstructed_logits.shape == (B, T, V)
    assert out.inverse_hidden_states.shape == (B, T, D)
    assert out.decision_logits.shape == out.confidence_logits.shape == (B, T)
    assert out.group_norms.shape == (B, T, L, len(sage.config.head_groups) + 1)  # + the concept heads
    assert len(out.hidden_states) == L + 1 and len(out.attentions) == L
    assert out.attentions[0].shape == (B, sage.config.num_attention_heads, T, T)
    loss = out.loss + consistency_sum(out, ids) + out.decision_logits.mean()
    loss.backward()
    missing = [n for n, p in sage.named_parameters() if p.grad is None]
    assert missing == [], f"parameters without gradient: {missing}"


def test_step_ids_count_separators(tokenizer):
    ids = encode(tokenizer, QUESTION)[0]
    step = tokenizer.convert_tokens_to_ids("<|step|>")
    step_ids = step_ids_from_input_ids(ids[None], [step])[0]
    assert step_ids[0] == 0 and step_ids[-1] == 2
    assert torch.equal(step_ids[ids == step], torch.tensor([1, 2]))


def _activate_adaptive_ln(model: SageForCausalLM) -> None:
    """Fresh models start with W_pos = 0 (a plain LayerNorm); give the step index a visible effect."""
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "step_proj" in name:
            param.data.normal_(0, 1.0)


def test_step_index_changes_the_output(sage, tokenizer):
    _activate_adaptive_ln(sage)
    ids = encode(tokenizer, QUESTION)
    with_steps = sage(ids).logits
    without_steps = sage(ids, step_ids=torch.zeros_like(ids)).logits
    assert not torch.allclose(with_steps, without_steps, atol=1e-4)


def test_kv_cached_forward_equals_full_forward(sage, tokenizer):
    _activate_adaptive_ln(sage)
    ids = encode(tokenizer, QUESTION)
    full = sage(ids, use_cache=False).logits
    split = 7
    first = sage(ids[:, :split], use_cache=True)
    step_ids = step_ids_from_input_ids(ids, sage.config.step_separator_token_ids)
    rest = sage(ids[:, split:], cache=first.cache, step_ids=step_ids[:, split:], use_cache=True)
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], 1), full, atol=1e-5, rtol=1e-5)


def test_cached_generation_equals_uncached(sage, tokenizer):
    _activate_adaptive_ln(sage)
    ids = encode(tokenizer, "<|question|>Tom has 3 apples.<|step|>")
    kw = dict(max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    cached = sage.generate(ids, use_cache=True, output_logits=True, return_dict_in_generate=True, **kw)
    uncached = sage.generate(ids, use_cache=False, output_logits=True, return_dict_in_generate=True, **kw)
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(torch.stack(cached.logits), torch.stack(uncached.logits), atol=1e-5, rtol=1e-5)


def test_cache_without_step_ids_is_a_clear_error(sage, tokenizer):
    ids = encode(tokenizer, QUESTION)
    first = sage(ids[:, :5], use_cache=True)
    with pytest.raises(ValueError, match="step_ids are needed"):
        sage(ids[:, 5:6], cache=first.cache)


@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_and_eager_logits_agree(tokenizer, padded):
    sdpa = make_sage(tokenizer, attn_implementation="sdpa")
    eager = make_sage(tokenizer, attn_implementation="eager")
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    ids = encode(tokenizer, QUESTION).repeat(2, 1)
    mask = torch.ones_like(ids)
    if padded:
        mask[0, :4] = 0
    a = sdpa(ids, attention_mask=mask, run_inverse=True, hidden_step=torch.tensor([1, 2]))
    b = eager(ids, attention_mask=mask, run_inverse=True, hidden_step=torch.tensor([1, 2]))
    keep = mask.bool()
    torch.testing.assert_close(a.logits[keep], b.logits[keep], atol=1e-5, rtol=0)
    torch.testing.assert_close(a.reconstructed_logits[keep], b.reconstructed_logits[keep], atol=1e-5, rtol=0)


def test_left_padding_does_not_change_real_tokens(sage, tokenizer):
    ids = encode(tokenizer, QUESTION)
    pad = torch.full((1, 3), tokenizer.pad_token_id)
    padded_ids = torch.cat([pad, ids], 1)
    mask = torch.cat([torch.zeros_like(pad), torch.ones_like(ids)], 1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    plain = sage(ids).logits
    padded = sage(padded_ids, attention_mask=mask, position_ids=positions).logits[:, 3:]
    torch.testing.assert_close(padded, plain, atol=1e-5, rtol=1e-5)


def test_output_attentions_falls_back_to_eager_with_a_warning(sage, tokenizer):
    ids = encode(tokenizer, QUESTION)
    with pytest.warns(UserWarning, match="falls back to eager"):
        out = sage(ids, output_attentions=True)
    weights = out.attentions[0]
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert torch.all(weights.triu(diagonal=1) == 0), "attention must be causal"
    torch.testing.assert_close(out.logits, sage(ids).logits, atol=1e-5, rtol=0)


def test_save_load_round_trip_gives_identical_logits(sage, tokenizer, tmp_path):
    _activate_adaptive_ln(sage)
    sage.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, SageForCausalLM)
    assert list(loaded.config.head_groups.items()) == list(sage.config.head_groups.items())  # order is meaning
    ids = encode(tokenizer, QUESTION)
    a, b = sage(ids, run_inverse=True), loaded(ids, run_inverse=True)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.decision_logits, b.decision_logits)


def test_auto_classes_and_pipeline(sage, tokenizer, tmp_path):
    sage.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), SageConfig)
    generator = pipeline("text-generation", model=str(tmp_path), tokenizer=str(tmp_path))
    assert isinstance(generator.model, SageForCausalLM)
    result = generator("Tom has 3 apples.", max_new_tokens=8, do_sample=False)
    assert result[0]["generated_text"].startswith("Tom has 3 apples.")
    assert len(result[0]["generated_text"]) > len("Tom has 3 apples.")


def test_bos_token_id_is_the_token_every_sequence_begins_with(sage, tokenizer, tmp_path):
    """inseq reads `config.bos_token_id` when it loads a model, and turns it into a token (transformers v5 configs
    have no such field unless the model's config declares it). SAGE's is `<|question|>`, the first token of every
    prompt; it saves and loads, and a config.json written before it was a field reads as it."""
    question = tokenizer.convert_tokens_to_ids("<|question|>")
    assert SageConfig().bos_token_id == sage.config.bos_token_id == BOS_TOKEN_ID == question
    assert encode(tokenizer, prompt_text("How many?"))[0, 0] == question
    assert tokenizer.convert_ids_to_tokens(sage.config.bos_token_id) == "<|question|>"  # what inseq does with it
    assert sage.generation_config.bos_token_id == question
    for bos in (question, None):  # the default, and a value set by hand
        SageConfig(bos_token_id=bos).save_pretrained(tmp_path / f"config-{bos}")
        assert AutoConfig.from_pretrained(tmp_path / f"config-{bos}").bos_token_id == bos
    sage.save_pretrained(tmp_path / "old")
    saved = json.loads((tmp_path / "old" / "config.json").read_text())
    assert saved["bos_token_id"] == question
    del saved["bos_token_id"]  # as config.json was written before
    (tmp_path / "old" / "config.json").write_text(json.dumps(saved))
    (tmp_path / "old" / "generation_config.json").unlink()
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "old").config.bos_token_id == question
    shipped = load_model().model.config
    assert (shipped.bos_token_id, shipped.eos_token_id, shipped.pad_token_id) == (question, 0, 1)


def test_nano_preset_is_the_papers_size():
    counts = parameter_breakdown("nano")
    assert 3.6e9 <= counts["total"] <= 4.4e9, counts
    nano = build_on_meta("nano")
    assert nano.config.num_hidden_layers == 24 and nano.config.num_inverse_layers == 6
    assert nano.config.head_groups == {"reasoning": 16, "memory": 8, "meta_cognitive": 8}
    assert nano.config.head_dim == 128 and nano.config.hidden_size == 4096


def test_medium_preset_is_about_12b():
    assert 11e9 <= parameter_breakdown("medium")["total"] <= 13e9


def test_presets_grow_in_size():
    totals = [parameter_breakdown(name)["total"] for name in ("pico", "micro", "small", "nano", "medium")]
    assert totals == sorted(totals) and len(PRESETS) == 5
    assert 1e6 <= totals[0] <= 1e7, "pico is the few-million-parameter CPU default"


@pytest.mark.parametrize("switch", ABLATION_SWITCHES)
def test_every_ablation_switch_builds_and_runs(tokenizer, switch):
    full = make_sage(tokenizer)
    ablated = make_sage(tokenizer, **{switch: False})
    assert ablated.num_parameters() < full.num_parameters(), f"{switch}=False removed nothing"
    ids = encode(tokenizer, QUESTION)
    out = ablated(ids, labels=ids, run_inverse=True, hidden_step=torch.tensor([1]))
    out.loss.backward()
    assert torch.isfinite(out.logits).all()
    assert (out.reconstructed_logits is None) == (switch == "use_inverse_stack")
    assert (out.decision_logits is None) == (switch == "use_meta_cognitive_head")
    generated = ablated.generate(ids, max_new_tokens=4, do_sample=False, eos_token_id=None)
    assert generated.shape[1] == ids.shape[1] + 4


def test_invalid_config_is_a_clear_error():
    with pytest.raises(ValueError, match="hidden_size"):
        SageConfig(hidden_size=100, head_dim=32)
    with pytest.raises(ValueError, match="unknown SAGE preset"):
        SageConfig.from_name("giga")


def test_context_overflow_is_a_clear_error(sage):
    ids = torch.zeros(1, sage.config.max_position_embeddings + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="longer than the model's context"):
        sage(ids)


def test_gradient_checkpointing_gives_the_same_gradients(tokenizer):
    ids = encode(tokenizer, QUESTION)
    grads = []
    for checkpointing in (False, True):
        model = make_sage(tokenizer).train()
        if checkpointing:
            model.activation_checkpointing_enable()  # transformers 5's name for gradient_checkpointing_enable
            assert model.model.layers[0].gradient_checkpointing
        model(ids, labels=ids, use_cache=False).loss.backward()
        grads.append(model.model.layers[0].attn.q_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_hook_points_cache_and_cleanup(sage, tokenizer):
    ids = encode(tokenizer, QUESTION)
    names = sage.hook_points()
    assert "model.layers.0.attn.hook_pattern" in names and "model.layers.1.hook_resid_post" in names
    out, cache = sage.run_with_cache(ids, output_attentions=True, names_filter=lambda n: "layers.1" in n)
    torch.testing.assert_close(out.logits, sage(ids).logits, atol=1e-5, rtol=0)
    T = ids.shape[1]
    assert cache["model.layers.1.attn.hook_pattern"].shape == (1, sage.config.num_attention_heads, T, T)
    assert cache["model.layers.1.hook_resid_post"].shape == (1, T, sage.config.hidden_size)
    assert cache["model.layers.1.ffn.hook_gates"].shape == (1, T, len(sage.config.ffn_experts))
    assert not any(".layers.0." in name for name in cache)
    assert all(not point._forward_hooks for point in names.values()), "hooks must be removed afterwards"


def test_hooks_can_edit_activations(sage, tokenizer):
    ids = encode(tokenizer, QUESTION)
    clean = sage(ids).logits

    def zero(module, inputs, output):
        return torch.zeros_like(output)

    with sage.hooks([("model.layers.1.hook_attn_out", zero)]):
        patched = sage(ids).logits
    assert not torch.allclose(clean, patched)
    torch.testing.assert_close(sage(ids).logits, clean)


def test_unknown_hook_name_lists_the_way_out(sage):
    with pytest.raises(ValueError, match="hook_points"), sage.hooks([("nope", lambda *a: None)]):
        pass


def test_consistency_loss_is_zero_only_for_equal_distributions():
    """Eq. 11 on the labelled positions: position t predicts label t + 1 (IGNORE leaves a position out)."""

    def kl(forward, reconstructed, labels):
        return consistency_sum(SageCausalLMOutput(logits=forward, reconstructed_logits=reconstructed), labels)

    logits, labels = torch.randn(2, 5, 11), torch.zeros(2, 5, dtype=torch.long)
    assert kl(logits, logits, labels).abs() < 1e-6
    assert kl(logits, torch.randn(2, 5, 11), labels) > 0.01
    only_first = torch.full((2, 5), IGNORE)
    only_first[0, 1] = 0  # keeps position (0, 0)
    other = logits.clone()
    other[1] = torch.randn(5, 11)  # differs only where no label is kept
    assert kl(logits, other, only_first).abs() < 1e-6
    assert kl(logits, other, labels) > 0.01


def test_the_reconstruction_does_not_read_the_hidden_step(sage, tokenizer):
    """Eq. 11 cannot be met by copying: changing the forward states of the hidden step (after the last layer, so
    that nothing else changes) leaves the reconstruction as it was; the meta head, which reads every position, moves."""
    ids = encode(tokenizer, QUESTION)
    hidden_step = torch.tensor([1])
    in_step = step_ids_from_input_ids(ids, sage.config.step_separator_token_ids) == 1
    last = f"model.layers.{sage.config.num_hidden_layers - 1}.hook_resid_post"

    def perturb(module, inputs, output):
        return output + 3.0 * in_step[..., None] * torch.randn_like(output)

    clean = sage(ids, run_inverse=True, hidden_step=hidden_step)
    with sage.hooks([(last, perturb)]):
        moved = sage(ids, run_inverse=True, hidden_step=hidden_step)
    assert torch.equal(clean.reconstructed_positions, in_step)
    assert not torch.allclose(clean.logits[in_step], moved.logits[in_step])
    torch.testing.assert_close(clean.reconstructed_logits, moved.reconstructed_logits)
    assert not torch.allclose(clean.decision_logits, moved.decision_logits)


def test_steps_to_hide_walk_every_step_of_every_row():
    step_ids = torch.tensor([[0, 0, 1, 1, 2, 3, 3], [0, 1, 1, 2, 2, 2, 2], [0, 0, 0, 0, 0, 0, 0]])
    labels = step_ids.clone()
    labels[1, 3:] = IGNORE  # row 1 labels only its first step
    hidden = torch.stack([steps_to_hide(step_ids, labels, turn) for turn in range(3)])
    assert hidden[:, 0].tolist() == [1, 2, 3] and hidden[:, 1].tolist() == [1, 1, 1]
    assert hidden[:, 2].tolist() == [0, 0, 0], "a row without a labelled step hides nothing to reconstruct"


def test_consistency_loss_is_not_met_at_initialisation_and_falls_with_training(tokenizer):
    """A forward model with peaked distributions (trained a few steps) and a fresh inverse stack: reading the
    step's own states the stack copies them (KL near zero, as before the hidden step); without them it starts far
    off and learns within a few steps."""
    from sagenano.data import generate_items
    from sagenano.data.format import training_text

    model = make_sage(tokenizer).train()
    texts = [training_text(item) for item in generate_items("linear_equation", 8, 0)]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    ids, mask = batch.input_ids, batch.attention_mask
    labels = ids.masked_fill(mask == 0, IGNORE)
    forward_parameters = [p for n, p in model.named_parameters() if not n.startswith(("inverse.", "meta_head."))]
    optimizer = torch.optim.AdamW(forward_parameters, lr=1e-2)
    for _ in range(40):
        model(ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    step_ids = step_ids_from_input_ids(ids, model.config.step_separator_token_ids)

    def kl_per_token(turn: int) -> tuple[float, float]:
        hidden_step = steps_to_hide(step_ids, labels, turn)
        out = model(ids, attention_mask=mask, run_inverse=True, hidden_step=hidden_step)
        tokens = ((labels[:, 1:] != IGNORE) & out.reconstructed_positions[:, :-1]).sum()
        hidden = consistency_sum(out, labels) / tokens
        copied = SageCausalLMOutput(
            logits=out.logits, reconstructed_logits=model.lm_head(out.inverse_hidden_states),
            reconstructed_positions=out.reconstructed_positions,
        )  # fmt: skip
        return hidden, consistency_sum(copied, labels).item() / tokens.item()

    start, copied = kl_per_token(0)
    assert copied < 0.1 and start.item() > 1.0, (copied, start.item())
    inverse_parameters = [p for n, p in model.named_parameters() if n.startswith("inverse.")]
    optimizer = torch.optim.AdamW(inverse_parameters, lr=3e-3)
    for turn in range(30):
        kl_per_token(turn)[0].backward()
        optimizer.step()
        optimizer.zero_grad()
    end = sum(kl_per_token(turn)[0].item() for turn in range(3)) / 3
    assert end < 0.5 * start.item(), (start.item(), end)


def test_tiny_config_helper_matches_pico_structure(tokenizer):
    pico = SageConfig.from_name("pico")
    tiny = tiny_sage_config(tokenizer)
    assert list(pico.head_groups) == list(tiny.head_groups) == ["reasoning", "memory", "meta_cognitive"]
    assert pico.ffn_experts == tiny.ffn_experts == ["logic", "numerical", "temporal", "memory"]
