"""load_model: the shipped default, presets, checkpoint folders, and clear errors for bad paths."""

from __future__ import annotations

import pytest
import torch

from conftest import encode, make_hf_model, make_sage
from sagenano.loading import load_model
from sagenano.model import SageForCausalLM


def test_default_is_a_sage_model_and_says_whether_it_is_trained():
    loaded = load_model()
    assert isinstance(loaded.model, SageForCausalLM)
    if not loaded.trained:
        assert "freshly initialised" in loaded.source


def test_preset_is_untrained_sage():
    loaded = load_model("preset:pico")
    assert isinstance(loaded.model, SageForCausalLM) and not loaded.trained
    assert loaded.model.config.vocab_size == len(loaded.tokenizer)
    assert loaded.model.config.step_separator_token_ids == [loaded.tokenizer.convert_tokens_to_ids("<|step|>")]
    with pytest.raises(ValueError, match="unknown SAGE preset"):
        load_model("preset:giga")


@pytest.mark.parametrize("family", ["sage", "llama"])
def test_checkpoint_folder_round_trip(tmp_path, tokenizer, family):
    model = make_sage(tokenizer) if family == "sage" else make_hf_model(family, len(tokenizer))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert type(loaded.model) is type(model) and loaded.trained
    ids = encode(tokenizer, "Tom has 3 apples.")
    assert torch.equal(loaded.model(ids).logits, model(ids).logits)


def test_unknown_path_says_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_model(str(tmp_path))  # exists, but holds no checkpoint


def test_unreachable_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="cannot load 'nobody/no-such-model'"):
        load_model("nobody/no-such-model")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors_is_a_clear_error(tmp_path, tokenizer, damage):
    make_sage(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_model(str(tmp_path))


def test_pickle_weights_are_refused(tmp_path, tokenizer):
    """Only safetensors load: a pickled state dict could run code when unpickled."""
    model = make_sage(tokenizer)
    model.config.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_model(str(tmp_path))
