"""What a run needs before its first step: the tokenizer, the model, and each stage's data file."""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import PreTrainedTokenizerBase

from ..config import SageConfig
from ..model import SageForCausalLM
from ..tokenizer import load_tokenizer, step_token_id, with_sage_prompt
from .distributed import Runtime
from .recipe import Recipe, StageConfig


def load_training_tokenizer() -> PreTrainedTokenizerBase:
    """The tokenizer a run trains with, and saves (with SAGE's question format) beside every checkpoint."""
    return with_sage_prompt(load_tokenizer())


def build_model(recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> SageForCausalLM:
    """The recipe's SAGE preset sized to the tokenizer, initialised from the recipe's seed (same on every rank), or
    the trained model the recipe starts from (`init`)."""
    if recipe.init is not None:
        return _initial_model(Path(recipe.init), tokenizer)
    config = SageConfig.from_name(
        recipe.preset,
        vocab_size=len(tokenizer),
        step_separator_token_ids=[step_token_id(tokenizer)],
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **recipe.model,
    )
    torch.manual_seed(recipe.seed)
    return SageForCausalLM(config)


def _initial_model(path: Path, tokenizer: PreTrainedTokenizerBase) -> SageForCausalLM:
    """A trained SAGE model to continue from, checked against the tokenizer the run trains with."""
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"init: {path} is not a SAGE model folder (config.json and model.safetensors, as `sage-nano train` "
            "writes into RUN/model)"
        )
    config = SageConfig.from_pretrained(path)
    if config.model_type != SageConfig.model_type:
        raise ValueError(f"init: {path} holds a {config.model_type!r} model; a recipe continues SAGE models only")
    if config.vocab_size != len(tokenizer):
        raise ValueError(
            f"init: {path} has {config.vocab_size} token embeddings but the training tokenizer has {len(tokenizer)}: "
            "it was trained with another tokenizer"
        )
    return SageForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True).train()


def prepare_stage_data(
    recipe: Recipe,
    stage: StageConfig,
    index: int,
    out_dir: Path,
    runtime: Runtime,
    model: SageForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    should_stop: Callable[[], bool] = lambda: False,
) -> Path:
    """The JSONL file a stage trains on, written by rank 0 (other ranks wait) and reused when up to date.
    `should_stop`: polled between stage-3 questions (one process only); when it says so, synthesis stops with
    `SynthesisStopped`, and the next run goes on from the questions already explained."""
    path = stage_data_path(out_dir, index, stage, recipe)
    # Stage 3 answers questions with the current model; a sharded (FSDP) or replicated model is first
    # gathered whole (a collective, so every rank takes part), then rank 0 alone generates with the copy.
    key = _data_key(recipe, stage)
    stale = not _up_to_date(path, key)
    source = _whole_copy(model, runtime) if stage.name == "inverse" and stale else None
    if runtime.is_main and stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.jsonl")  # stage 3's questions explained so far, for this recipe only
        if not _stamped(partial, key):
            partial.unlink(missing_ok=True)
            _stamp(partial, key)
        _write_stage_data(recipe, stage, path, source, tokenizer, should_stop)
        _stamp(path, key)
        partial.with_suffix(".key").unlink(missing_ok=True)
    if runtime.distributed:
        dist.barrier()
    return path


def stage_data_path(out_dir: Path, index: int, stage: StageConfig, recipe: Recipe) -> Path:
    """Stage 2 trains on the generated items (train.jsonl); stage 1 too, unless the recipe has text files,
    which only stage 1 reads (from a file of its own); stage 3 has its own synthesised file."""
    if stage.name == "inverse" or (stage.name == "base_lm" and recipe.text_files):
        return out_dir / "data" / f"stage{index + 1}-{stage.name}.jsonl"
    return out_dir / "data" / "train.jsonl"


def _write_stage_data(
    recipe: Recipe,
    stage: StageConfig,
    path: Path,
    source: SageForCausalLM | None,
    tokenizer: PreTrainedTokenizerBase,
    should_stop: Callable[[], bool],
) -> None:
    items = path.parent / "train.jsonl"
    if path == items:
        write_training_items(recipe, items)
        return
    items_key = _data_key(recipe, None)
    if not _up_to_date(items, items_key):  # stage 1's own file and stage 3's synthesis draw on the items
        write_training_items(recipe, items)
        _stamp(items, items_key)
    if stage.name == "inverse":
        from .stage3_data import write_inverse_data

        write_inverse_data(recipe, stage, source, tokenizer, items, path, should_stop)
    else:
        write_base_lm_data(recipe, stage, items, path)


def _up_to_date(path: Path, key: str) -> bool:
    return path.is_file() and _stamped(path, key)


def _stamped(path: Path, key: str) -> bool:
    stamp = path.with_suffix(".key")
    return stamp.is_file() and stamp.read_text() == key


def _stamp(path: Path, key: str) -> None:
    """Records which recipe a data file holds, so a changed recipe rewrites it."""
    path.with_suffix(".key").write_text(key)


def _whole_copy(model: SageForCausalLM, runtime: Runtime) -> SageForCausalLM | None:
    """The model itself in one process; under torchrun an unsharded copy on rank 0 (None elsewhere)."""
    if not runtime.distributed:
        return model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not runtime.is_main:
        return None
    copy = SageForCausalLM(model.config)
    copy.load_state_dict(state)
    return copy.eval()


def _data_key(recipe: Recipe, stage: StageConfig | None) -> str:
    """Identifies the data a recipe asks for (`stage` None: the generated items), so a changed recipe never
    reuses stale files."""
    fields = {"tasks": recipe.tasks, "options": recipe.task_options, "seed": recipe.seed}
    if recipe.cot_files:  # a changed file (size or time) rewrites the data
        fields["cot"] = [[name, *_stat(Path(name))] for name in recipe.cot_files]
    if stage is not None and stage.name == "base_lm" and recipe.text_files:
        fields.update(text=recipe.text_files, examples=stage.examples)
    if stage is not None and stage.name == "inverse":
        fields.update(
            init=recipe.init,
            questions=stage.synth_questions,
            resamples=stage.synth_resamples,
            repeats=stage.synth_repeats,
            references=stage.reference_items,
            examples=stage.examples,
        )
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _stat(path: Path) -> list[int]:
    stat = path.stat() if path.is_file() else None
    return [stat.st_size, stat.st_mtime_ns] if stat else [-1, -1]


def write_training_items(recipe: Recipe, path: Path) -> None:
    """All tasks' training items, checked, and the recipe's own chain-of-thought files, shuffled together (seeded)."""
    from ..data import generate_items
    from ..data.checker import check_item
    from ..data.io import write_jsonl

    records: list[dict] = []
    for task, n in sorted(recipe.tasks.items()):
        for item in generate_items(task, n, recipe.seed, "train", **recipe.task_options.get(task, {})):
            problems = check_item(item)
            if problems:
                raise AssertionError(f"generated item {item.id} fails its checker: {problems}")
            records.append(item.to_dict())
    records.extend(read_own_items(recipe, path.parent / "skipped-lines.txt"))
    if not records:
        raise ValueError("the recipe has no training data: give `tasks` or `cot_files`")
    random.Random(recipe.seed).shuffle(records)
    write_jsonl(records, path)


def read_own_items(recipe: Recipe, skipped_log: Path) -> list[dict]:
    """The items of the recipe's chain-of-thought files; each skipped line is listed in `skipped_log` and the
    count (with the first few) is printed."""
    from ..data.cot_files import read_cot_file

    items, skipped = [], []
    for name in recipe.cot_files:
        read = read_cot_file(name)
        items += read.items
        skipped += read.skipped
        bad = len(read.skipped)
        print(f"{name}: {len(read.items):,} items; {bad:,} bad line{'s' if bad != 1 else ''} skipped", file=sys.stderr)
    if skipped:
        skipped_log.write_text("\n".join(skipped) + "\n", encoding="utf-8")
        print("\n".join(skipped[:5]), file=sys.stderr)
        print(f"(all {len(skipped):,} skipped lines: {skipped_log})", file=sys.stderr)
    return items


def write_base_lm_data(recipe: Recipe, stage: StageConfig, items: Path, path: Path) -> None:
    """Stage 1's data when the recipe has text files: all their text, and generated items for the rest of the
    stage's examples, shuffled together, so the stage reads all the text once (a part of it when the text is
    longer than the stage).

    Only stage 1 reads the text: stage 2's loss is on solutions, which plain text does not have (measured:
    GSM8K's text in stages 1–2 cost stage 2 most of its accuracy; README, Data)."""
    from itertools import islice

    from ..data.io import iter_records, write_jsonl

    records = [{"text": chunk} for text_file in recipe.text_files for chunk in _text_chunks(Path(text_file))]
    records.extend(islice(iter_records(items), max(stage.examples - len(records), 0)))
    random.Random(recipe.seed).shuffle(records)
    write_jsonl(records, path)


def _text_chunks(path: Path, chars: int = 1200) -> list[str]:
    """A text file cut into chunks; a `.jsonl` file (e.g. GSM8K's train split) is read as the text of its
    records' string fields, one record after another."""
    if not path.is_file():
        raise FileNotFoundError(
            f"text file {path} in the recipe does not exist (paths are relative to the directory "
            "you run from: the repository root for recipes/)"
        )
    if path.suffix == ".jsonl":
        from ..data.io import iter_records

        records = iter_records(path)
        text = "\n\n".join("\n".join(v for v in record.values() if isinstance(v, str)) for record in records)
    else:
        text = path.read_text(encoding="utf-8")
    return [text[i : i + chars] for i in range(0, len(text), chars) if text[i : i + chars].strip()]
