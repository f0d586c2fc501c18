"""Training checkpoints: written atomically, verified on load, each one also a loadable model folder.

A checkpoint folder holds `model.safetensors` + `config.json` (so `from_pretrained` reads it), the
optimizer and trainer state (`torch.load(weights_only=True)`: tensors and plain values, never code),
and `checkpoint.json`, a manifest of every file's size and SHA-256 written last. The folder is built
under a temporary name and renamed into place, so a crash leaves either a whole checkpoint or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

MANIFEST = "checkpoint.json"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.pt"
TRAINER = "trainer.pt"
LATEST = "latest"
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
_NAME = re.compile(r"^stage(\d+)-step(\d+)$")


class CorruptCheckpointError(ValueError):
    """A checkpoint folder that is incomplete or whose files do not match its manifest."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, prefix=f".{path.name}.") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def gather_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Full (unsharded, CPU) model and optimizer state dicts; a collective: every rank must call it."""
    return get_model_state_dict(model, options=FULL), get_optimizer_state_dict(model, optimizer, options=FULL)


def save_checkpoint(
    directory: Path,
    name: str,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict,
    trainer_state: dict[str, Any],
    config: Any,
    tied: dict[str, str] | None = None,
    tokenizer: Any = None,
) -> Path:
    """Writes `directory/name` atomically and points `directory/latest` at it. Call on rank 0 only.

    `tied` maps a weight that is tied to another (`lm_head.weight` -> `model.embed_tokens.weight`) and so is
    stored once, as transformers does. With `tokenizer`, the checkpoint is also a model folder that
    `load_model` and the evaluation scripts take as it is.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=f".{name}.tmp-"))
    try:
        weights = {k: v.contiguous() for k, v in model_state.items() if k not in (tied or {})}
        save_file(weights, tmp / WEIGHTS, metadata={"format": "pt"})
        config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        torch.save(optimizer_state, tmp / OPTIMIZER)
        torch.save(trainer_state, tmp / TRAINER)
        files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps({"files": files, "step": trainer_state.get("step")}, indent=1))
        final = directory / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(directory / LATEST, name)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint `directory/latest` points at, or None when there is none yet."""
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    return directory / pointer.read_text().strip()


def list_checkpoints(directory: Path) -> list[Path]:
    """The checkpoint folders in `directory` (whole or not), oldest first."""
    found = [p for p in directory.iterdir() if p.is_dir() and _NAME.match(p.name)] if directory.is_dir() else []
    return sorted(found, key=checkpoint_order)


def checkpoint_order(path: Path) -> tuple[int, int]:
    """(stage, step) of a checkpoint folder named stageS-stepN."""
    stage, step = _NAME.match(path.name).groups()
    return int(stage), int(step)


def resume_checkpoint(directory: Path, name: str | None = None) -> Path:
    """The verified checkpoint to resume from: `name` (a folder in `directory`), or the one `latest` names.

    Raises:
        ValueError: If there is no such checkpoint; CorruptCheckpointError if it is not whole. Both name the
            newest whole checkpoint before it, to pass as `--from`.
    """
    if name is not None:
        path = directory / Path(name).name
        if not path.is_dir() or not _NAME.match(path.name):
            have = ", ".join(p.name for p in list_checkpoints(directory)) or "none"
            raise ValueError(f"--from {name}: {directory} has no checkpoint of that name (it has: {have})")
    else:
        path = latest_checkpoint(directory)
        if path is None:  # none yet, or a run killed between a checkpoint's rename and `latest`
            whole = [p for p in list_checkpoints(directory) if _is_whole(p)]
            if whole:
                newest = whole[-1].name
                raise ValueError(f"--resume: {directory / LATEST} is missing; resume with --resume --from {newest}")
            raise ValueError(f"--resume: no checkpoint in {directory}; start without --resume")
    try:
        if not path.is_dir():
            raise CorruptCheckpointError(f"{directory / LATEST} names {path.name}, which is not there")
        verify_checkpoint(path)
    except CorruptCheckpointError as error:
        raise CorruptCheckpointError(f"{error}; {_earlier_advice(directory, path)}") from None
    return path


def _earlier_advice(directory: Path, broken: Path) -> str:
    earlier = [p for p in list_checkpoints(directory) if p.name != broken.name and _is_whole(p)]
    if _NAME.match(broken.name):
        earlier = [p for p in earlier if checkpoint_order(p) < checkpoint_order(broken)]
    if not earlier:
        return "no whole checkpoint is left: start the run again in a new --out"
    return f"resume from the newest whole one before it with --resume --from {earlier[-1].name}"


def _is_whole(path: Path) -> bool:
    try:
        verify_checkpoint(path)
    except CorruptCheckpointError:
        return False
    return True


def remove_unfinished_writes(directory: Path) -> list[Path]:
    """Deletes the temporary folders of checkpoint writes that a killed run left (call only while holding the
    run folder's lock: then no write is in progress); returns them."""
    leftovers = sorted([*directory.glob(".*.tmp-*"), *directory.glob(f".{LATEST}.*")]) if directory.is_dir() else []
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return leftovers


def verify_checkpoint(path: Path) -> None:
    """Raises CorruptCheckpointError unless every file listed in the manifest is whole."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise CorruptCheckpointError(f"{path} is not a complete checkpoint: {MANIFEST} is missing")
    try:
        listed = json.loads(manifest.read_text())["files"].items()
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CorruptCheckpointError(f"{manifest} is damaged ({error!r})") from None
    for name, expected in listed:
        file = path / name
        if not file.is_file():
            raise CorruptCheckpointError(f"checkpoint {path} is missing {name}")
        if file.stat().st_size != expected["bytes"] or _sha256(file) != expected["sha256"]:
            raise CorruptCheckpointError(
                f"checkpoint {path} is corrupt: {name} has {file.stat().st_size} bytes, its manifest says "
                f"{expected['bytes']} (or its checksum differs)"
            )


def load_checkpoint(path: Path, model: nn.Module, tied: dict[str, str] | None = None) -> dict[str, Any]:
    """Loads the weights of a checkpoint that `resume_checkpoint` verified into the (possibly wrapped) model;
    returns the trainer state."""
    weights = load_file(path / WEIGHTS)
    for target, source in (tied or {}).items():
        weights[target] = weights[source]
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))
    return torch.load(path / TRAINER, weights_only=True)


def load_trainer_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Loads the optimizer state of a checkpoint that `resume_checkpoint` verified into `optimizer`; returns the
    trainer state."""
    state = torch.load(path / OPTIMIZER, weights_only=True)
    # This rank's own state dict names the groups' parameters in order (the full one gathers to rank 0 only).
    current = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=False))
    expected = _parameter_names(current)
    if _parameter_names(state) != expected:
        missing, unknown = sorted(expected - _parameter_names(state)), sorted(_parameter_names(state) - expected)
        raise ValueError(
            f"{path / OPTIMIZER} does not fit this model's parameters (missing: {', '.join(missing[:5]) or 'none'}; "
            f"unknown: {', '.join(unknown[:5]) or 'none'}): resume with the recipe that wrote it"
        )
    # A parameter that had no gradient yet when the checkpoint was taken (stage 3's meta head before its first
    # labelled batch) has no optimizer state in it. Loading is not strict about that, and the zero state torch
    # fills in is dropped again, so the parameter's first step is the one it would have had without the stop.
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True, strict=False))
    names = [name for group in current["param_groups"] for name in group["params"]]
    parameters = [param for group in optimizer.param_groups for param in group["params"]]
    for name, param in zip(names, parameters, strict=True):
        if name not in state["state"]:
            optimizer.state.pop(param, None)
    return torch.load(path / TRAINER, weights_only=True)


def _parameter_names(optimizer_state: dict) -> set[str]:
    """The parameters an optimizer state dict lists in its groups (whether or not they have state yet)."""
    return {name for group in optimizer_state["param_groups"] for name in group["params"]}
