"""Shared fixtures: the shipped tokenizer and tiny models built from configs (never from a hub)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: it reads this once; tests never go online

import random
from pathlib import Path

import pytest
import torch
from transformers import (
    BloomConfig,
    BloomForCausalLM,
    FalconConfig,
    FalconForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from sagenano.config import SageConfig
from sagenano.eval.benchmarks import benchmarks_dir
from sagenano.model import SageForCausalLM
from sagenano.tokenizer import load_tokenizer, step_token_id


def _benchmark_data() -> Path | None:
    try:
        return benchmarks_dir()
    except FileNotFoundError:
        return None


BENCHMARK_DATA = _benchmark_data()  # ../shared/data/benchmarks or $SAGENANO_BENCHMARKS; None where it is absent
needs_benchmarks = pytest.mark.skipif(
    BENCHMARK_DATA is None, reason="benchmark files not found: set SAGENANO_BENCHMARKS to shared/data/benchmarks"
)

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()


def tiny_sage_config(tokenizer, **overrides) -> SageConfig:
    """SAGE pico, shrunk further so tests run in milliseconds; every component stays on."""
    sizes = dict(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_inverse_layers=2, head_dim=16,
        head_groups={"reasoning": 2, "memory": 1, "meta_cognitive": 1}, num_concept_heads=2, num_concepts=8,
        expert_intermediate_size=32, intermediate_size=128, max_position_embeddings=256,
        step_separator_token_ids=[step_token_id(tokenizer)], eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return SageConfig(**{**sizes, **overrides})


def make_sage(tokenizer, seed: int = 0, **overrides) -> SageForCausalLM:
    torch.manual_seed(seed)
    return SageForCausalLM(tiny_sage_config(tokenizer, **overrides)).eval()


@pytest.fixture
def sage(tokenizer) -> SageForCausalLM:
    return make_sage(tokenizer)


def make_hf_model(family: str, vocab_size: int, seed: int = 0):
    """A tiny, randomly initialised model of a transformers family, built from its config."""
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, max_position_embeddings=256, bos_token_id=None, eos_token_id=0)
    llama_like = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, **common)  # fmt: skip
    if family == "gpt2":
        config = GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=256,
                            bos_token_id=0, eos_token_id=0)  # fmt: skip
        return GPT2LMHeadModel(config).eval()
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**llama_like)).eval()
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**llama_like)).eval()
    if family == "mistral":
        return MistralForCausalLM(MistralConfig(**llama_like)).eval()
    if family == "mistral_sliding":  # a sliding window shorter than a test's chain
        return MistralForCausalLM(MistralConfig(**llama_like, sliding_window=8)).eval()
    if family == "gemma2":  # layers alternate between a sliding window (shorter than a test's chain) and full attention
        return Gemma2ForCausalLM(Gemma2Config(**llama_like, head_dim=16, sliding_window=8, pad_token_id=0)).eval()
    if family == "phi3":
        return Phi3ForCausalLM(Phi3Config(**llama_like, pad_token_id=0)).eval()
    if family == "bloom":  # ALiBi positions, attention outside transformers' attention interface
        config = BloomConfig(vocab_size=vocab_size, hidden_size=64, n_layer=2, n_head=4, bos_token_id=None,
                             eos_token_id=0, pad_token_id=0)  # fmt: skip
        return BloomForCausalLM(config).eval()
    if family == "falcon":  # rotary positions, SDPA that cannot be switched to eager
        config = FalconConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                              max_position_embeddings=256, bos_token_id=None, eos_token_id=0,
                              pad_token_id=0)  # fmt: skip
        return FalconForCausalLM(config).eval()
    raise ValueError(family)


def encode(tokenizer, text: str) -> torch.Tensor:
    return tokenizer(text, return_tensors="pt").input_ids


def copy_example(rng: random.Random, answer_prefix: str) -> tuple[str, str]:
    """A question holding one number, and the answer that copies it."""
    n = rng.randint(1, 9)
    a, b, c = rng.sample(["red", "blue", "green", "tall", "small", "warm", "cold", "soft"], 3)
    return f"The {a} box holds {n} marbles. The {b} lid is {c}. How many marbles?", f"{answer_prefix}{n}"


def train_copier(tokenizer, answer_prefix: str, steps: int, batch_size: int, example=copy_example):
    """A tiny Llama trained (in seconds) to answer with the one number of the question (`example(rng, prefix)` makes
    each training question and answer)."""
    model = make_hf_model("llama", len(tokenizer), seed=1).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    for _ in range(steps):
        batch = [example(rng, answer_prefix) for _ in range(batch_size)]
        encoded = tokenizer([q + a + tokenizer.eos_token for q, a in batch], return_tensors="pt", padding=True)
        labels = encoded.input_ids.masked_fill(encoded.attention_mask == 0, -100)
        for row, (question, _) in enumerate(batch):
            labels[row, : len(tokenizer(question).input_ids)] = -100  # learn the answer only
        loss = model(**encoded, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def answer_copier(tokenizer):
    """The copier answering after " Answer: ", trained once per test process and shared by the modules that explain
    it (they only read it)."""
    return train_copier(tokenizer, " Answer: ", steps=200, batch_size=32)


def hesitant_example(rng: random.Random, answer_prefix: str) -> tuple[str, str]:
    """The copier's question, answered with its number or the next one, half the time each: a two-way choice."""
    question, answer = copy_example(rng, answer_prefix)
    n = int(answer.split()[-1])
    return question, f"{answer_prefix}{n + rng.randint(0, 1)}"


@pytest.fixture(scope="session")
def hesitant_copier(tokenizer):
    """A copier that hesitates between the question's number and the next one (trained once per test process)."""
    return train_copier(tokenizer, " Answer: ", steps=200, batch_size=32, example=hesitant_example)
