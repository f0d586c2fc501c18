"""load_model: the shipped default, presets, checkpoint folders, and clear errors for bad paths."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

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


def saved_sage(tmp_path, tokenizer):
    make_sage(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return tmp_path


def edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_tensor_holding_nan_is_refused_by_name(tmp_path, tokenizer):
    folder = saved_sage(tmp_path, tokenizer)
    weights = load_file(folder / "model.safetensors")
    weights["model.norm.weight"][0] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"model\.norm\.weight holds NaN"):
        load_model(str(folder))


@pytest.mark.parametrize("damage", ["model_type", "renamed", "vocab_size"])
def test_weights_that_do_not_fit_the_config_are_refused_unless_asked(tmp_path, tokenizer, damage):
    folder = saved_sage(tmp_path, tokenizer)
    if damage == "model_type":
        edit_json(folder / "config.json", model_type="llama", architectures=["LlamaForCausalLM"])
    elif damage == "vocab_size":
        edit_json(folder / "config.json", vocab_size=100)
    else:
        weights = load_file(folder / "model.safetensors")
        weights["model.final_norm.weight"] = weights.pop("model.norm.weight")
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    expected = {"model_type": "missing tensor", "renamed": "model.norm.weight", "vocab_size": "reshaped tensor"}
    with pytest.raises(ValueError, match=f"do not fit its config.json.*{expected[damage]}.*allow_mismatched_weights"):
        load_model(str(folder))
    if damage != "vocab_size":  # asked for: it loads (the tensors it lacks stay random)
        assert load_model(str(folder), allow_mismatched_weights=True).model is not None


def test_a_garbage_tokenizer_file_is_named(tmp_path, tokenizer):
    folder = saved_sage(tmp_path, tokenizer)
    (folder / "tokenizer.json").write_text("garbage{")
    with pytest.raises(ValueError, match=r"cannot read the tokenizer in .*tokenizer\.json"):
        load_model(str(folder))
