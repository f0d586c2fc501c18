"""What a run needs before its first step: the tokenizer, the model, and each stage's data file."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import PreTrainedTokenizerBase

from ..config import SageConfig
from ..model import SageForCausalLM
from ..tokenizer import load_tokenizer, step_token_id
from .distributed import Runtime
from .recipe import Recipe, StageConfig


def load_training_tokenizer() -> PreTrainedTokenizerBase:
    return load_tokenizer()


def build_model(recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> SageForCausalLM:
    """The recipe's SAGE preset sized to the tokenizer, initialised from the recipe's seed (same on every rank)."""
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


def prepare_stage_data(
    recipe: Recipe,
    stage: StageConfig,
    index: int,
    out_dir: Path,
    runtime: Runtime,
    model: SageForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
) -> Path:
    """The JSONL file a stage trains on, written by rank 0 (other ranks wait) and reused when up to date."""
    path = stage_data_path(out_dir, index, stage)
    data_dir = path.parent
    key = _data_key(recipe, stage)
    stamp = path.with_suffix(".key")
    up_to_date = path.is_file() and stamp.is_file() and stamp.read_text() == key
    # Stage 3 answers questions with the current model; a sharded (FSDP) or replicated model is first
    # gathered whole (a collective, so every rank takes part), then rank 0 alone generates with the copy.
    source = _whole_copy(model, runtime) if stage.name == "inverse" and not up_to_date else None
    if runtime.is_main and not up_to_date:
        data_dir.mkdir(parents=True, exist_ok=True)
        if stage.name == "inverse":
            from .synthesis import write_inverse_data

            write_inverse_data(recipe, stage, source, tokenizer, data_dir / "train.jsonl", path)
        else:
            write_training_items(recipe, path)
        stamp.write_text(key)
    if runtime.distributed:
        dist.barrier()
    return path


def stage_data_path(out_dir: Path, index: int, stage: StageConfig) -> Path:
    """Stages 1–2 share the generated items; stage 3 has its own synthesised file."""
    name = "train.jsonl" if stage.name != "inverse" else f"stage{index + 1}-inverse.jsonl"
    return out_dir / "data" / name


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


def _data_key(recipe: Recipe, stage: StageConfig) -> str:
    """Identifies the data a recipe asks for, so a changed recipe never reuses stale files."""
    fields = {"tasks": recipe.tasks, "options": recipe.task_options, "seed": recipe.seed, "text": recipe.text_files}
    if stage.name == "inverse":
        fields.update(
            questions=stage.synth_questions,
            resamples=stage.synth_resamples,
            repeats=stage.synth_repeats,
            references=stage.reference_items,
            examples=stage.examples,
        )
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def write_training_items(recipe: Recipe, path: Path) -> None:
    """All tasks' training items, checked, shuffled together (seeded), plus the recipe's text files."""
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
    for text_file in recipe.text_files:
        records.extend({"text": chunk} for chunk in _text_chunks(Path(text_file)))
    random.Random(recipe.seed).shuffle(records)
    write_jsonl(records, path)


def _text_chunks(path: Path, chars: int = 1200) -> list[str]:
    """A text file cut into chunks; a `.jsonl` file (e.g. GSM8K's train split) is read as the text of its
    records' string fields, one record after another."""
    if not path.is_file():
        raise FileNotFoundError(f"text file {path} in the recipe does not exist (paths are relative to the directory "
                                "you run from: the repository root for recipes/)")  # fmt: skip
    if path.suffix == ".jsonl":
        from ..data.io import iter_records

        records = iter_records(path)
        text = "\n\n".join("\n".join(v for v in record.values() if isinstance(v, str)) for record in records)
    else:
        text = path.read_text(encoding="utf-8")
    return [text[i : i + chars] for i in range(0, len(text), chars) if text[i : i + chars].strip()]
