"""Tests for the SAGE-nano byte-level BPE tokenizer."""

from __future__ import annotations

import pytest

from sagenano.tokenizer import (
    SPECIAL_TOKENS,
    load_tokenizer,
    save_tokenizer,
    step_token_id,
    train_tokenizer,
)

CORPUS = (
    "Natalia sold 48 clips in April and 24 clips in May.\n"
    "<|question|> How many apples are left? <|step|> Step 1: 10 - 3 = 7. <|answer|> 7<|endoftext|>\n"
    "Un café très élégant à Zürich coûte 5 francs. 😀🎉\n"
    "The quick brown fox jumps over the lazy dog.\n"
)
UNICODE_TEXT = "Café crème, naïve façade, Ωmega ≠ 42 — 😀👍🏽 <|step|> ß"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A small tokenizer trained from a temporary text file."""
    corpus_file = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    corpus_file.write_text(CORPUS * 30, encoding="utf-8")
    return train_tokenizer(files=[corpus_file], vocab_size=320)


def test_vocab_size_and_special_ids(tokenizer):
    assert len(tokenizer) <= 320
    assert len(tokenizer) > 256
    for expected_id, token in enumerate(SPECIAL_TOKENS.values()):
        assert tokenizer.convert_tokens_to_ids(token) == expected_id
    assert tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.pad_token == "<|pad|>"
    assert tokenizer.eos_token_id == 0
    assert tokenizer.pad_token_id == 1
    assert set(tokenizer.all_special_tokens) == set(SPECIAL_TOKENS.values())
    assert tokenizer.model_max_length == 2048


def test_no_bos_eos_added(tokenizer):
    ids = tokenizer("hello world")["input_ids"]
    assert 0 not in ids
    assert tokenizer.decode(ids) == "hello world"


def test_every_digit_is_its_own_token(tokenizer):
    ids = tokenizer.encode("12345")
    assert len(ids) == 5
    assert [tokenizer.decode([i]) for i in ids] == list("12345")
    # Even digits seen together often in training are never merged.
    assert len(tokenizer.encode("48")) == 2


@pytest.mark.parametrize("name", list(SPECIAL_TOKENS))
def test_special_tokens_are_single_tokens(tokenizer, name):
    token = SPECIAL_TOKENS[name]
    assert tokenizer.encode(token) == [list(SPECIAL_TOKENS).index(name)]
    ids = tokenizer.encode(f"abc{token}def")
    assert ids.count(tokenizer.convert_tokens_to_ids(token)) == 1


def test_step_token_id(tokenizer):
    assert step_token_id(tokenizer) == 3
    assert tokenizer.encode("<|step|>") == [step_token_id(tokenizer)]


def test_step_token_id_missing_raises():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab={"a": 0}, merges=[])))
    with pytest.raises(ValueError, match="step"):
        step_token_id(plain)


def test_unicode_round_trip(tokenizer):
    ids = tokenizer.encode(UNICODE_TEXT)
    assert tokenizer.decode(ids) == UNICODE_TEXT


def test_save_load_round_trip(tokenizer, tmp_path):
    out = save_tokenizer(tokenizer, tmp_path / "tok")
    assert out == tmp_path / "tok"
    assert (out / "tokenizer.json").is_file()
    assert (out / "tokenizer_config.json").is_file()
    loaded = load_tokenizer(out)
    for text in (CORPUS, UNICODE_TEXT, "12345 <|answer|> <|explanation|>"):
        assert loaded.encode(text) == tokenizer.encode(text)
    assert set(loaded.all_special_tokens) == set(SPECIAL_TOKENS.values())
    assert step_token_id(loaded) == step_token_id(tokenizer)
    from_file = load_tokenizer(out / "tokenizer.json")
    assert from_file.encode(UNICODE_TEXT) == tokenizer.encode(UNICODE_TEXT)
    assert set(from_file.all_special_tokens) == set(SPECIAL_TOKENS.values())


def test_shipped_tokenizer_loads():
    shipped = load_tokenizer()
    assert len(shipped) == 4096
    assert step_token_id(shipped) == 3
    assert shipped.eos_token_id == 0
    assert len(shipped.encode("2024")) == 4
    assert shipped.decode(shipped.encode(UNICODE_TEXT)) == UNICODE_TEXT


def test_missing_file_raises(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(ValueError, match=r"nope\.txt"):
        train_tokenizer(files=[missing])


def test_empty_input_raises():
    with pytest.raises(ValueError, match="files"):
        train_tokenizer()


def test_too_small_vocab_raises():
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(texts=["abc"], vocab_size=100)


def test_unknown_load_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        load_tokenizer(tmp_path / "does-not-exist")
