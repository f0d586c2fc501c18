"""Byte-level BPE tokenizer for SAGE-nano: training, saving, loading and special-token helpers."""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS: dict[str, str] = {
    "eos": "<|endoftext|>",
    "pad": "<|pad|>",
    "question": "<|question|>",
    "step": "<|step|>",
    "answer": "<|answer|>",
    "explanation": "<|explanation|>",
}

# Their ids in every SAGE tokenizer: `train_tokenizer` adds them first, in this order.
SPECIAL_TOKEN_IDS: dict[str, int] = {name: i for i, name in enumerate(SPECIAL_TOKENS)}

TOKENIZER_FILE = "tokenizer.json"
BYTE_ALPHABET_SIZE = 256
MIN_VOCAB_SIZE = BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS)
DEFAULT_MODEL_MAX_LENGTH = 2048
_CHUNK_CHARS = 1 << 16
_EXTRA_KEYS = ("question", "step", "answer", "explanation")


def _extra_special_tokens() -> list[str]:
    """Return the special tokens that have no named transformers attribute."""
    return [SPECIAL_TOKENS[key] for key in _EXTRA_KEYS]


def _validate_inputs(files: Sequence[str | Path] | None, texts: Iterable[str] | None, vocab_size: int) -> list[Path]:
    """Check training arguments and return the file paths to read."""
    if files is None and texts is None:
        raise ValueError("train_tokenizer needs training data: pass `files` (text file paths) or `texts`.")
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: it must be at least {MIN_VOCAB_SIZE} "
            f"({BYTE_ALPHABET_SIZE} byte symbols + {len(SPECIAL_TOKENS)} special tokens)."
        )
    paths = [Path(f) for f in files or []]
    for path in paths:
        if not path.is_file():
            raise ValueError(f"Training file not found: '{path}'. Check the path or pass the text via `texts`.")
    return paths


def _iter_file(path: Path) -> Iterator[str]:
    """Yield a UTF-8 text file in chunks of whole lines, without loading it all at once."""
    with path.open(encoding="utf-8") as handle:
        buffer: list[str] = []
        size = 0
        for line in handle:
            buffer.append(line)
            size += len(line)
            if size >= _CHUNK_CHARS:
                yield "".join(buffer)
                buffer, size = [], 0
        if buffer:
            yield "".join(buffer)


def _iter_corpus(paths: Sequence[Path], texts: Iterable[str] | None) -> Iterator[str]:
    """Yield non-empty training text from files first, then from in-memory texts."""
    file_chunks = chain.from_iterable(_iter_file(path) for path in paths)
    for text in chain(file_chunks, texts or []):
        if text:
            yield text


def _new_backend() -> Tokenizer:
    """Build an untrained byte-level BPE tokenizer with one-token-per-digit pre-tokenization."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _wrap(backend: Tokenizer, model_max_length: int) -> PreTrainedTokenizerFast:
    """Wrap a trained backend as a transformers tokenizer with the SAGE-nano special tokens."""
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=SPECIAL_TOKENS["eos"],
        pad_token=SPECIAL_TOKENS["pad"],
        extra_special_tokens=_extra_special_tokens(),
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def train_tokenizer(
    files: Sequence[str | Path] | None = None,
    texts: Iterable[str] | None = None,
    vocab_size: int = 4096,
    min_frequency: int = 2,
    *,
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on text files and/or strings.

    The special tokens of `SPECIAL_TOKENS` get ids 0..5 in order, every digit is its own token
    and no BOS/EOS token is added on encoding.

    Args:
        files: UTF-8 text files to train on; they are streamed, never fully loaded.
        texts: Extra training strings (any iterable, consumed once).
        vocab_size: Target vocabulary size, at least 256 + the number of special tokens.
        min_frequency: Minimum pair frequency for a merge to be learned.
        model_max_length: Maximum sequence length recorded in the returned tokenizer.

    Returns:
        The trained tokenizer, wrapped as a `PreTrainedTokenizerFast`.

    Raises:
        ValueError: If no data is given, a file does not exist or `vocab_size` is too small.
    """
    paths = _validate_inputs(files, texts, vocab_size)
    backend = _new_backend()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_iter_corpus(paths, texts), trainer=trainer)
    return _wrap(backend, model_max_length)


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | Path) -> Path:
    """Save a tokenizer as `tokenizer.json` plus `tokenizer_config.json`.

    Args:
        tokenizer: The tokenizer to save.
        directory: Target folder; created if missing.

    Returns:
        The folder the files were written to.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    return out


def default_tokenizer_dir() -> Path:
    """Return the folder of the tokenizer shipped inside the `sagenano` package.

    Returns:
        Path of `sagenano/assets/tokenizer`.
    """
    return Path(str(importlib.resources.files("sagenano") / "assets" / "tokenizer"))


def _ensure_special_tokens(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """Register any SAGE-nano special token that a loaded tokenizer does not mark as special."""
    missing: dict[str, object] = {}
    if tokenizer.eos_token != SPECIAL_TOKENS["eos"]:
        missing["eos_token"] = SPECIAL_TOKENS["eos"]
    if tokenizer.pad_token != SPECIAL_TOKENS["pad"]:
        missing["pad_token"] = SPECIAL_TOKENS["pad"]
    extras = [t for t in _extra_special_tokens() if t not in tokenizer.extra_special_tokens]
    if extras:
        missing["extra_special_tokens"] = extras
    if missing:
        tokenizer.add_special_tokens(missing, replace_extra_special_tokens=False)
    return tokenizer


def load_tokenizer(path: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Load a tokenizer from disk, offline.

    Args:
        path: A folder holding `tokenizer.json` (and usually `tokenizer_config.json`), or the path
            of a `tokenizer.json` file. `None` loads the tokenizer shipped with the package.

    Returns:
        The tokenizer, with the SAGE-nano special tokens registered as special.

    Raises:
        FileNotFoundError: If `path` is neither a folder with `tokenizer.json` nor a tokenizer file.
    """
    target = default_tokenizer_dir() if path is None else Path(path)
    if target.is_dir() and (target / TOKENIZER_FILE).is_file():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(target), local_files_only=True)
    elif target.is_file() and target.suffix == ".json":
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=str(target),
            model_max_length=DEFAULT_MODEL_MAX_LENGTH,
            clean_up_tokenization_spaces=False,
        )
    else:
        raise FileNotFoundError(
            f"No tokenizer found at '{target}': expected a folder containing {TOKENIZER_FILE} "
            f"(as written by save_tokenizer) or the path of a {TOKENIZER_FILE} file."
        )
    return _ensure_special_tokens(tokenizer)


def step_token_id(tokenizer: PreTrainedTokenizerFast) -> int:
    """Return the id of the `<|step|>` token.

    Args:
        tokenizer: A SAGE-nano tokenizer.

    Returns:
        The integer id of `<|step|>`.

    Raises:
        ValueError: If the tokenizer has no `<|step|>` token.
    """
    token = SPECIAL_TOKENS["step"]
    token_id = tokenizer.backend_tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"Tokenizer has no {token} token; train it with sagenano.tokenizer.train_tokenizer.")
    return token_id


# SAGE's question format (`data.format.prompt_text`) as a chat template: saved with SAGE models so that
# chat-aware tools (and `trace_generate`) prompt them the way they were trained.
CHAT_TEMPLATE = (
    "{{ '" + SPECIAL_TOKENS["question"] + "' + messages[-1]['content'] + '" + SPECIAL_TOKENS["step"] + "' }}"
)


def with_sage_prompt(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """Sets SAGE's question format as the tokenizer's chat template and returns the tokenizer."""
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
