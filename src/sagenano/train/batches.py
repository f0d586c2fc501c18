"""Streaming, length-bucketed batches from JSONL: deterministic per (seed, epoch), resumable by position.

Items are read a bucket at a time (never the whole corpus), encoded, sorted by length inside the bucket
so that a batch pads little, cut into batches, and the batches of a bucket shuffled with a seed of
their own. A batch is the *global* micro-batch; `shard` gives one rank its rows, so any number of
ranks sees exactly the same examples as one process does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

from ..data import format as fmt  # the special tokens (EXPLANATION here names a segment)

LossOn = Literal["all", "solution", "solution+explanation"]
IGNORE = -100
NONE, REASONING, EXPLANATION = 0, 1, 2  # segments: not trained on, L_reasoning (eq. 9), L_explanation (eq. 10)


@dataclass(frozen=True)
class Example:
    """One encoded example: token ids and, per position, what its token is trained as."""

    input_ids: list[int]
    segments: list[int]  # NONE, REASONING or EXPLANATION
    confidence: list[int] | None = None  # per position: 1 step correct, 0 wrong, -1 no target
    decision: list[int] | None = None  # per position: 1 decision point, 0 not, -1 no target


@dataclass
class Batch:
    """(B, T) tensors, right-padded. `segments` says which loss each token's prediction belongs to."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    segments: torch.Tensor
    meta_targets: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, T) each, -1 = no target

    def labels(self, segment: int | None = None) -> torch.Tensor:
        """Input ids where the token is trained on (in `segment`, or in any), -100 elsewhere."""
        keep = self.segments != NONE if segment is None else self.segments == segment
        return torch.where(keep, self.input_ids, IGNORE)

    @property
    def num_loss_tokens(self) -> int:
        return int((self.segments[:, 1:] != NONE).sum())

    def shard(self, rank: int, world_size: int) -> Batch:
        rows = slice(rank, None, world_size)
        meta = {k: v[rows] for k, v in self.meta_targets.items()}
        return Batch(self.input_ids[rows], self.attention_mask[rows], self.segments[rows], meta)

    def to(self, device: torch.device) -> Batch:
        meta = {k: v.to(device) for k, v in self.meta_targets.items()}
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.segments.to(device), meta)


def encode_item(record: dict, tokenizer: PreTrainedTokenizerBase, loss_on: LossOn, max_length: int) -> Example:
    """Encodes one JSONL record: `text` (plain text, trained on whole) or a reasoning item."""
    from ..data.format import prompt_text, training_text

    if "text" in record:
        ids = tokenizer(record["text"], add_special_tokens=False).input_ids[:max_length]
        return Example(ids, [REASONING] * len(ids))
    full = training_text_with_explanation(record, training_text)
    ids = tokenizer(full, add_special_tokens=False).input_ids[:max_length]
    if loss_on == "all":
        return Example(ids, [REASONING] * len(ids))
    prompt_len = len(tokenizer(prompt_text(record["question"]), add_special_tokens=False).input_ids)
    explanation_start = len(ids)
    if record.get("explanation"):
        explanation_start = len(tokenizer(full.split(fmt.EXPLANATION)[0], add_special_tokens=False).input_ids)
    with_explanation = loss_on == "solution+explanation"
    chain = REASONING if record.get("train_chain", True) else NONE  # a wrong own chain is not imitated
    segments = [
        NONE if i < prompt_len else chain if i < explanation_start else EXPLANATION if with_explanation else NONE
        for i in range(len(ids))
    ]
    if "step_correct" not in record:
        return Example(ids, segments)
    return Example(ids, segments, *_meta_targets(ids, record, tokenizer))


def _meta_targets(ids: list[int], record: dict, tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """Per-position targets of the meta-cognitive head from a stage-3 record's step labels.

    The k-th `<|step|>` token opens step k: the head's confidence target for every token of step k is
    whether step k is correct, and its decision target sits on the separator, the position whose
    next-token choice starts the step. The answer's tokens get whether the answer is correct.
    """
    step_id, answer_id, explanation_id = tokenizer.convert_tokens_to_ids([fmt.STEP, fmt.ANSWER, fmt.EXPLANATION])
    confidence, decision = [-1] * len(ids), [-1] * len(ids)
    starts = [i for i, token in enumerate(ids) if token == step_id]
    answer_start = next((i for i, token in enumerate(ids) if token == answer_id), len(ids))
    for k, start in enumerate(starts[: len(record["step_correct"])]):
        end = starts[k + 1] if k + 1 < len(starts) else answer_start
        confidence[start:end] = [int(record["step_correct"][k])] * (end - start)
        decision[start] = int(record["decision_steps"][k])
    explanation_start = next((i for i, token in enumerate(ids) if token == explanation_id), len(ids))
    confidence[answer_start:explanation_start] = [int(record["answer_correct"])] * (explanation_start - answer_start)
    return confidence, decision


def training_text_with_explanation(record: dict, training_text) -> str:
    """The record's training text, with its synthesised explanation (stage 3) after the answer.

    Stage-3 records carry the model's own steps, so only question, steps and answer are read.
    """
    chain = SimpleNamespace(question=record["question"], steps=record["steps"], answer=record["answer"])
    text = training_text(chain)
    if record.get("explanation"):
        text = text.removesuffix(fmt.END) + fmt.EXPLANATION + record["explanation"] + fmt.END
    return text


PAD_MULTIPLE = 64  # batch widths are rounded up to this: few distinct shapes, so oneDNN's bf16 kernel cache
# (one JIT kernel per shape) stays small; measured: without it a tiny model's RSS grew 1.6 -> 2.9 GB in 250 steps


def collate(examples: list[Example], pad_id: int, pad_multiple: int = PAD_MULTIPLE) -> Batch:
    width = max(len(e.input_ids) for e in examples)
    width = -(-width // pad_multiple) * pad_multiple
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    segments = torch.full((len(examples), width), NONE, dtype=torch.long)
    has_meta = any(e.confidence is not None for e in examples)
    meta = {k: torch.full((len(examples), width), -1, dtype=torch.long) for k in ("confidence", "decision")}
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        mask[row, :n] = 1
        segments[row, :n] = torch.tensor(example.segments)
        if example.confidence is not None:
            meta["confidence"][row, :n] = torch.tensor(example.confidence)
            meta["decision"][row, :n] = torch.tensor(example.decision)
    return Batch(ids, mask, segments, meta if has_meta else {})


def iter_batches(
    path: Path,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    loss_on: LossOn,
    seed: int,
    epoch: int,
    max_length: int,
    bucket_batches: int = 32,
) -> Iterator[Batch]:
    """Yields the global micro-batches of one epoch over `path`, in a deterministic order."""
    from ..data.io import iter_records

    bucket: list[Example] = []
    bucket_index = 0
    for record in iter_records(path):
        bucket.append(encode_item(record, tokenizer, loss_on, max_length))
        if len(bucket) == batch_size * bucket_batches:
            yield from _bucket_batches(bucket, batch_size, tokenizer.pad_token_id, (seed, epoch, bucket_index))
            bucket, bucket_index = [], bucket_index + 1
    if len(bucket) >= batch_size:  # a last partial batch is dropped: every batch has the global size
        yield from _bucket_batches(bucket, batch_size, tokenizer.pad_token_id, (seed, epoch, bucket_index))


def _bucket_batches(bucket: list[Example], batch_size: int, pad_id: int, key: tuple) -> Iterator[Batch]:
    rng = random.Random(repr(key))
    bucket = list(bucket)
    rng.shuffle(bucket)  # so equal lengths group differently each epoch (the sort below is stable)
    bucket.sort(key=lambda e: len(e.input_ids))
    batches = [bucket[i : i + batch_size] for i in range(0, len(bucket) - batch_size + 1, batch_size)]
    rng.shuffle(batches)
    for examples in batches:
        yield collate(examples, pad_id)


def endless_batches(
    path: Path,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    loss_on: LossOn,
    seed: int,
    max_length: int,
    start: tuple[int, int] = (0, 0),
) -> Iterator[tuple[tuple[int, int], Batch]]:
    """Epoch after epoch; yields ((epoch, index of the batch in it), batch), starting at `start`.

    Resuming at a position re-reads and skips what came before it, so the order is exactly the
    uninterrupted one.
    """
    epoch, skip = start
    while True:
        produced = 0
        for index, batch in enumerate(iter_batches(path, tokenizer, batch_size, loss_on, seed, epoch, max_length)):
            produced += 1
            if index >= skip:
                yield (epoch, index + 1), batch
        if produced == 0:
            raise ValueError(f"{path} holds fewer examples than one batch ({batch_size}); make more data")
        epoch, skip = epoch + 1, 0


def cumulative_tokens(
    path: Path,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    grad_accum: int,
    loss_on: LossOn,
    seed: int,
    max_length: int,
    steps: int,
) -> list[tuple[int, int]]:
    """(loss tokens, all tokens) trained on after each of `steps` optimizer steps, by replaying the batches."""
    batches = endless_batches(path, tokenizer, batch_size, loss_on, seed, max_length)
    totals, loss_tokens, all_tokens = [], 0, 0
    for _ in range(steps):
        for _ in range(grad_accum):
            _, batch = next(batches)
            loss_tokens += batch.num_loss_tokens
            all_tokens += int(batch.attention_mask.sum())
        totals.append((loss_tokens, all_tokens))
    return totals
