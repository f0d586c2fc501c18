"""`sage-nano eval`: a causal LM on the benchmark registry, one JSONL line per item, resumable, sharded by torchrun.

Each task's items are answered by greedy chain-of-thought generation (zero-shot or k-shot) or, for
multiple-choice tasks, scored by option log-likelihood. Every answered item is appended to
`<out>/<task>.jsonl` at once, so an interrupted run loses at most one batch and a rerun skips what is
there. Under `torchrun --nproc_per_node N` each rank answers every N-th item into its own file and
rank 0 merges them, in the items' order, into the same `<task>.jsonl` a single process writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data import prompt_text
from ..data.format import ANSWER, END, QUESTION
from ..decoding import context_length, padded_batch
from ..generation import trace_generate
from ..inverse.answers import expected_calibration_error, marked_answer_tokens, tokens_covering
from ..train.distributed import Runtime
from .benchmarks import BenchItem, Task, get_task, load_items, shot_items
from .task_accuracy import rescore_answer

if TYPE_CHECKING:
    from ..inverse.confidence import Calibration

SCORINGS = ("generate", "loglik")
MIN_NEW_TOKENS = 16  # an item whose prompt leaves less room than this is recorded as skipped, not cut short
HF_STOP = "\n\nQuestion:"  # plain models run on into a new question after answering; stop them there


@dataclass(frozen=True)
class EvalSettings:
    """How a task is asked and answered."""

    limit: int | None = None  # first N items of the task (after k-shot exemplars are set aside)
    shots: int = 0  # worked exemplars put before each question
    scoring: str = "generate"  # "generate" (chain of thought, then extract) or "loglik" (best option)
    batch_size: int = 8
    max_new_tokens: int = 256
    data_path: Path | None = None  # a user's file instead of the registry's default
    source: str = "file"  # or "hub" (Hugging Face datasets, needs a network)
    calibration: Calibration | None = None  # the model's answer-confidence calibration, when it has one


def is_sage_tokenizer(tokenizer: PreTrainedTokenizerBase) -> bool:
    """SAGE models read `<|question|>q<|step|>` and answer after `<|answer|>`; other models get plain text."""
    return QUESTION in tokenizer.get_vocab()


def build_prompt(item: BenchItem, shots: list[BenchItem], sage: bool) -> str:
    """The text the model continues: k worked exemplars, then the question, in the model's own format."""
    if sage:
        exemplars = "".join(f"{prompt_text(s.question)}{s.rationale or ''}{ANSWER}{s.gold}{END}" for s in shots)
        return exemplars + prompt_text(item.question)
    exemplars = "".join(
        f"Question: {s.question}\nAnswer: {(s.rationale or '').strip()} The answer is {s.gold}.\n\n" for s in shots
    )
    return f"{exemplars}Question: {item.question}\nAnswer: Let's think step by step."


def loglik_context(item: BenchItem, shots: list[BenchItem], sage: bool) -> tuple[str, list[str]]:
    """Context and one continuation per option: SAGE answers right after `<|answer|>` with the option's label,
    plain models continue "Answer:" with the option's text (as lm-evaluation-harness does)."""
    if sage:
        exemplars = "".join(f"{QUESTION}{s.question}{ANSWER}{s.gold}{END}" for s in shots)
        return f"{exemplars}{QUESTION}{item.question}{ANSWER}", list(item.labels)
    exemplars = "".join(f"Question: {s.question}\nAnswer: {s.gold}\n\n" for s in shots)
    return f"{exemplars}Question: {item.question}\nAnswer:", [f" {choice}" for choice in item.choices]


def evaluate_task(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task_name: str,
    out_dir: Path,
    settings: EvalSettings,
    runtime: Runtime | None = None,
    progress: bool = True,
) -> dict:
    """Answers (the rest of) one task and returns its summary; see the module docstring for the files."""
    task = get_task(task_name)
    if settings.scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {settings.scoring!r}")
    if settings.scoring == "loglik" and task.answer_kind != "choice":
        raise ValueError(f"{task_name} is not multiple choice; score it with scoring='generate'")
    rank, world = (runtime.rank, runtime.world_size) if runtime else (0, 1)
    items = _eval_items(task, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged = out_dir / f"{task.name}.jsonl"
    mine = merged if world == 1 else out_dir / f"{task.name}.rank{rank}.jsonl"
    _drop_partial_line(mine)
    done = _answered_ids(merged) | _answered_ids(mine)
    todo = [item for item in items[rank::world] if item.id not in done]
    shots = shot_items(task.name, settings.shots, settings.data_path)[0] if settings.shots else []
    answer = _score_options if settings.scoring == "loglik" else _generate_answers
    with mine.open("a", encoding="utf-8") as sink:
        bar = tqdm(total=len(todo), desc=task.name, disable=not progress or rank != 0, unit="item")
        for batch in _batches(todo, settings.batch_size):
            for record in answer(model, tokenizer, task, batch, shots, settings):
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
            sink.flush()
            bar.update(len(batch))
        bar.close()
    if world > 1:
        dist.barrier()
        if rank == 0:
            _merge_shards(out_dir, task.name, world, [item.id for item in items])
        dist.barrier()
    return summarize(read_records(merged, [item.id for item in items]), task.name, settings)


def _eval_items(task: Task, settings: EvalSettings) -> list[BenchItem]:
    """The task's items minus the k-shot exemplars, capped at `limit`."""
    items = load_items(task.name, settings.data_path, source=settings.source)
    if settings.shots:
        excluded = shot_items(task.name, settings.shots, settings.data_path)[1]
        items = [item for item in items if item.id not in excluded]
    return items[: settings.limit] if settings.limit is not None else items


def _batches(items: list[BenchItem], size: int) -> Iterator[list[BenchItem]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


# ---------------------------------------------------------------------------------------------------
# Answering


def _generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    batch: list[BenchItem],
    shots: list[BenchItem],
    settings: EvalSettings,
) -> list[dict]:
    """Greedy chains for a batch; items whose prompt leaves no room in the context are recorded as skipped."""
    sage = is_sage_tokenizer(tokenizer)
    prompts = [build_prompt(item, shots, sage) for item in batch]
    room = _room(model, tokenizer, prompts, settings.max_new_tokens)
    least = min(MIN_NEW_TOKENS, settings.max_new_tokens)
    records = [_skipped(task, item, room[i]) for i, item in enumerate(batch) if room[i] < least]
    fitting = [i for i in range(len(batch)) if room[i] >= least]
    if fitting:
        traces = trace_generate(
            model,
            tokenizer,
            [prompts[i] for i in fitting],
            max_new_tokens=min(room[i] for i in fitting),
            attention="none",
            chat=False,
            stop_strings=None if sage else [HF_STOP],
        )
        for i, trace in zip(fitting, traces, strict=True):
            records.append(_generated_record(task, batch[i], trace))
            if settings.calibration is not None:
                records[-1]["calibrated_confidence"] = rescore_answer(model, trace, settings.calibration)[1]
    order = {item.id: n for n, item in enumerate(batch)}
    return sorted(records, key=lambda record: order[record["id"]])


def _room(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], wanted: int) -> list[int]:
    """New tokens each prompt may have: `wanted`, or what the context leaves."""
    context = context_length(model)
    lengths = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    return [wanted if context is None else min(wanted, context - n) for n in lengths]


def _skipped(task: Task, item: BenchItem, room: int) -> dict:
    reason = f"the prompt leaves {max(room, 0)} tokens of the model's context (< {MIN_NEW_TOKENS})"
    return {
        **_base_record(task, item),
        "chain": None,
        "predicted": None,
        "correct": False,
        "confidence": None,
        "skipped": reason,
    }


def _base_record(task: Task, item: BenchItem) -> dict:
    return {"task": task.name, "id": item.id, "question": item.question, "gold": item.gold}


def _generated_record(task: Task, item: BenchItem, trace) -> dict:
    chain = trace.text.removesuffix(HF_STOP)
    predicted = task.extract(chain, item)
    return {
        **_base_record(task, item),
        "chain": chain,
        "predicted": predicted,
        "correct": task.is_correct(predicted, item.gold),
        "confidence": answer_confidence(trace, predicted),
        "finish_reason": trace.finish_reason,
        "skipped": None,
    }


def answer_confidence(trace, predicted: str | None) -> float | None:
    """P(answer tokens | everything before them), from the generation itself.

    The answer tokens are those after `<|answer|>` (SAGE), else the tokens covering the last place the
    extracted answer is written in the chain. None when there is no answer or it is not written verbatim.
    """
    if predicted is None:
        return None
    if ANSWER in trace.text:
        span = marked_answer_tokens(trace)
        return float(trace.logprobs[span[0] : span[1]].sum().exp()) if span else None
    covering = tokens_covering(trace, predicted)
    return float(trace.logprobs[covering].sum().exp()) if covering else None


@torch.no_grad()
def _score_options(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    batch: list[BenchItem],
    shots: list[BenchItem],
    settings: EvalSettings,
) -> list[dict]:
    """The option whose continuation has the highest summed log-probability; confidence = its softmax share."""
    sage = is_sage_tokenizer(tokenizer)
    records = []
    for item in batch:
        context, continuations = loglik_context(item, shots, sage)
        scores = continuation_logprobs(model, tokenizer, context, continuations)
        best = max(range(len(scores)), key=scores.__getitem__)
        share = torch.tensor(scores).softmax(0)[best].item()
        predicted = item.labels[best]
        records.append(
            {
                **_base_record(task, item),
                "chain": None,
                "predicted": predicted,
                "correct": task.is_correct(predicted, item.gold),
                "confidence": share,
                "option_logprobs": scores,
                "skipped": None,
            }
        )
    return records


@torch.no_grad()
def continuation_logprobs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, context: str, continuations: list[str]
) -> list[float]:
    """Σ log P(continuation tokens | context) for each continuation, in one right-padded batch."""
    context_ids = tokenizer(context, add_special_tokens=False).input_ids
    rows = [context_ids + tokenizer(c, add_special_tokens=False).input_ids for c in continuations]
    limit = context_length(model)
    if limit is not None and max(map(len, rows)) > limit:
        raise ValueError(f"a {max(map(len, rows))}-token option does not fit the model's context of {limit}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, mask = padded_batch(rows, pad, side="right")
    ids, mask = ids.to(model.device), mask.to(model.device)
    logprobs = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
    totals = []
    for b, row in enumerate(rows):
        positions = torch.arange(len(context_ids), len(row), device=model.device)
        totals.append(float(logprobs[b, positions - 1, ids[b, positions]].sum()))
    return totals


# ---------------------------------------------------------------------------------------------------
# Files and summaries


def _drop_partial_line(path: Path) -> None:
    """An interrupted write can leave half a line at the end: cut it, so the next record starts a line of its own."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _answered_ids(path: Path) -> set[str]:
    """Ids already in a results file; a line cut off by an interruption is ignored (and answered again)."""
    if not path.is_file():
        return set()
    ids = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            ids.add(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return ids


def read_records(path: Path, order: list[str] | None = None) -> list[dict]:
    """A results file's complete records, one per id (the last wins), in `order` when given."""
    records: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                records[record["id"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    if order is None:
        return list(records.values())
    return [records[i] for i in order if i in records]


def _merge_shards(out_dir: Path, task_name: str, world: int, order: list[str]) -> None:
    """Rank 0: every rank's records plus what the merged file already held, rewritten in item order."""
    merged = out_dir / f"{task_name}.jsonl"
    shards = [out_dir / f"{task_name}.rank{r}.jsonl" for r in range(world)]
    records = {r["id"]: r for path in [merged, *shards] for r in read_records(path)}
    temporary = merged.with_suffix(".jsonl.tmp")
    with temporary.open("w", encoding="utf-8") as sink:
        for item_id in order:
            if item_id in records:
                sink.write(json.dumps(records[item_id], ensure_ascii=False) + "\n")
    temporary.replace(merged)
    for path in shards:
        path.unlink(missing_ok=True)


def summarize(records: list[dict], task_name: str, settings: EvalSettings) -> dict:
    """Accuracy over every answered item (skipped and unanswered count as wrong), and confidence calibration."""
    n = len(records)
    correct = [bool(r["correct"]) for r in records]
    confidences = [r["confidence"] if r["confidence"] is not None else 0.0 for r in records]
    return {
        "task": task_name,
        "n": n,
        "correct": sum(correct),
        "accuracy": sum(correct) / n if n else None,
        "no_answer": sum(r["predicted"] is None for r in records),
        "skipped": sum(bool(r.get("skipped")) for r in records),
        "mean_confidence": sum(confidences) / n if n else None,
        "ece": expected_calibration_error(confidences, correct) if n else None,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
    }
