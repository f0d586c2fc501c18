"""Stage-3 data, synthesised from the stage-2 model's own answers (paper §5.2), with measured labels only.

For each training question the model explains its own greedy chain with the engine (`sagenano.explain`: rollouts,
dependencies, every claim checked by intervention). The explanation it learns to write (`own_explanation.target_text`)
states only what held there: decision points whose alternatives changed the answer, each step's dependency that held,
the least confident step. The meta-cognitive head's labels are measured too: each step is correct when it equals
the reference step at the same place, and the answer when it equals the reference answer; from the start of every
step, `R` samples are drawn to the answer (p_k: the share that reaches the greedy answer), and step k is a decision
point when fixing it moves that share by at least `DECISION_SHIFT` (|p_{k+1} − p_k|).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from ..data.format import ANSWER, END, STEP, parse_answer, prompt_text
from ..decoding import room_after
from ..model import SageForCausalLM
from .recipe import Recipe, StageConfig

DECISION_SHIFT = 0.5
MAX_CHAIN_TOKENS = 160


def split_generated(text: str) -> tuple[list[str], str | None]:
    """Steps and answer of a generated continuation of `prompt_text` (which ends with `<|step|>`)."""
    body, has_answer, rest = text.partition(ANSWER)
    answer = rest.split(END)[0].strip() if has_answer else None
    body = body.split(END)[0]  # a chain that ended without an answer
    return [s.strip() for s in body.split(STEP) if s.strip()], answer


@torch.no_grad()
def _sample_answers(model, tokenizer, prefixes: list[str], samples: int, seed: int) -> list[list[str | None]]:
    """`samples` sampled answers for each prefix, all prefixes in one left-padded batch."""
    rows = [prefix for prefix in prefixes for _ in range(samples)]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        inputs = tokenizer(rows, return_tensors="pt", add_special_tokens=False, padding=True)
    finally:
        tokenizer.padding_side = side
    room = room_after(model, inputs.input_ids.shape[1], MAX_CHAIN_TOKENS)
    if room < 1:
        return [[None] * samples for _ in prefixes]
    torch.manual_seed(seed)
    out = model.generate(**inputs, do_sample=True, top_k=0, max_new_tokens=room, pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(out[:, inputs.input_ids.shape[1] :])
    answers = [parse_answer(row + text) for row, text in zip(rows, texts, strict=True)]
    return [answers[i : i + samples] for i in range(0, len(answers), samples)]


def label_item(record: dict, model, tokenizer, resamples: int, seed: int) -> dict:
    """A stage-3 record: the model's own chain, its measured step labels, and the explanation that held."""
    from ..inverse import explain
    from ..inverse.own_explanation import target_text

    chain_options = {"max_new_tokens": MAX_CHAIN_TOKENS, "own_explanation": False, "reliance": False, "seed": seed}
    report = explain(model, tokenizer, record["question"], **chain_options)
    steps, answer = split_generated(report.chain + (END if report.finish_reason == "eos" else ""))
    gold_steps = record["steps"]
    step_correct = [k < len(gold_steps) and s == gold_steps[k] for k, s in enumerate(steps)]
    prompt = prompt_text(record["question"])
    # From the start of each step, and (last) from after the final step, where the answer comes next.
    prefixes = [prompt + STEP.join(steps[:k]) + (STEP if 0 < k < len(steps) else "") for k in range(len(steps))]
    prefixes.append(prompt + STEP.join(steps) + ANSWER)
    sampled = _sample_answers(model, tokenizer, prefixes, resamples, seed)
    share = [sum(a == answer for a in group) / resamples for group in sampled]
    decision = [abs(share[k + 1] - share[k]) >= DECISION_SHIFT for k in range(len(steps))]
    return {
        **record,
        "steps": steps,
        "answer": answer or "",
        "reference_answer": record["answer"],
        "answer_correct": answer == record["answer"],
        "step_correct": step_correct,
        "decision_steps": decision,
        "answer_share": share,
        "step_confidence": [s.confidence for s in report.steps if not s.is_answer][: len(steps)],
        "train_chain": answer == record["answer"] and all(step_correct),
        "explanation": target_text(report),
    }


def write_inverse_data(
    recipe: Recipe,
    stage: StageConfig,
    model: SageForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    train_path: Path,
    out_path: Path,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Answers `stage.synth_questions` training questions with the current model and writes stage-3 records
    (each `stage.synth_repeats` times), mixed with reference items (plain L_reasoning) so that stage 3 keeps the
    stage-2 skill instead of over-fitting a few hundred synthesised items.

    Each record is also appended to `<out>.partial.jsonl` as it is made, and a run that finds that file goes on
    after its last whole line; `should_stop()`, asked before each question, ends synthesis with `SynthesisStopped`."""
    from ..data.io import iter_records, write_jsonl

    num_references = stage.reference_items
    if num_references is None:
        num_references = max(stage.examples - stage.synth_questions * stage.synth_repeats, stage.synth_questions)
    records = []
    for record in iter_records(train_path):
        if "question" in record:
            records.append(record)
        if len(records) == stage.synth_questions + num_references:
            break
    questions, references = records[: stage.synth_questions], records[stage.synth_questions :]
    partial = out_path.with_suffix(".partial.jsonl")
    labelled = _whole_lines(partial)
    was_training = model.training
    model.eval()
    progress = tqdm(total=len(questions), initial=len(labelled), desc="synthesising stage-3 data (explaining chains)")
    with partial.open("a", encoding="utf-8") as log:
        for number in range(len(labelled), len(questions)):
            if should_stop():
                raise SynthesisStopped(
                    f"stopped during stage-3 synthesis after {number} of {len(questions)} questions; the same "
                    "command (with --resume when the run has checkpoints) goes on from there"
                )
            seed = recipe.seed * 1_000_003 + number
            item = label_item(questions[number], model, tokenizer, stage.synth_resamples, seed)
            log.write(json.dumps(item, ensure_ascii=False) + "\n")
            log.flush()
            labelled.append(item)
            progress.update()
    progress.close()
    model.train(was_training)
    mixed = labelled * stage.synth_repeats + references
    random.Random(recipe.seed + 3).shuffle(mixed)
    write_jsonl(mixed, out_path)
    partial.unlink()


class SynthesisStopped(RuntimeError):
    """Stage-3 synthesis was asked to stop; what it made is kept in the partial file."""


def _whole_lines(path: Path) -> list[dict]:
    """The records of a partial file up to its first broken line (a write cut by a kill), which is dropped from the
    file too, so that appending goes on after whole lines only."""
    if not path.is_file():
        return []
    records, whole = [], 0
    text = path.read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines(keepends=True):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
        if not line.endswith("\n"):
            records.pop()
            break
        whole += len(line)
    if whole < len(text):
        path.write_text(text[:whole], encoding="utf-8")
    return records
