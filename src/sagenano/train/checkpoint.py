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


def verify_checkpoint(path: Path) -> None:
    """Raises CorruptCheckpointError unless every file listed in the manifest is whole."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise CorruptCheckpointError(f"{path} is not a complete checkpoint: {MANIFEST} is missing")
    for name, expected in json.loads(manifest.read_text())["files"].items():
        file = path / name
        if not file.is_file():
            raise CorruptCheckpointError(f"checkpoint {path} is missing {name}; resume from an earlier one")
        if file.stat().st_size != expected["bytes"] or _sha256(file) != expected["sha256"]:
            raise CorruptCheckpointError(
                f"checkpoint {path} is corrupt: {name} has {file.stat().st_size} bytes, its manifest says "
                f"{expected['bytes']} (or its checksum differs); delete {path} and resume from an earlier checkpoint"
            )


def load_checkpoint(path: Path, model: nn.Module, tied: dict[str, str] | None = None) -> dict[str, Any]:
    """Verifies `path`, loads its weights into the (possibly wrapped) model, returns the trainer state."""
    verify_checkpoint(path)
    weights = load_file(path / WEIGHTS)
    for target, source in (tied or {}).items():
        weights[target] = weights[source]
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))
    return torch.load(path / TRAINER, weights_only=True)


def load_trainer_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Loads the optimizer state of a verified checkpoint into `optimizer`; returns the trainer state."""
    verify_checkpoint(path)
    state = torch.load(path / OPTIMIZER, weights_only=True)
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
    return torch.load(path / TRAINER, weights_only=True)
