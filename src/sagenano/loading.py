"""Loading a (model, tokenizer) pair: a SAGE preset, a local checkpoint folder, or a hub id."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from . import model as _register_sage  # noqa: F401  (registers sage_nano with the Auto classes)
from .config import PRESETS, SageConfig
from .model import SageForCausalLM
from .tokenizer import load_tokenizer, step_token_id, with_sage_prompt

if TYPE_CHECKING:
    from .inverse.confidence import Calibration

SHIPPED_MODEL_DIR = "assets/model"


@dataclass
class LoadedModel:
    """A model, its tokenizer, and where they came from (shown to the user)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str
    trained: bool
    calibration: Calibration | None = None  # answer-confidence calibration stored with the model

    @property
    def temperature(self) -> float | None:
        """The calibration's temperature (None: not calibrated)."""
        return self.calibration.temperature if self.calibration else None


def shipped_model_dir() -> Path:
    return Path(str(importlib.resources.files("sagenano"))) / SHIPPED_MODEL_DIR


def fresh_sage_model(preset: str = "pico", seed: int = 0) -> LoadedModel:
    """A randomly initialised SAGE model of a preset, with the shipped tokenizer. Untrained."""
    tokenizer = load_tokenizer()
    config = SageConfig.from_name(
        preset,
        vocab_size=len(tokenizer),
        step_separator_token_ids=[step_token_id(tokenizer)],
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    tokenizer = with_sage_prompt(tokenizer)
    torch.manual_seed(seed)
    model = SageForCausalLM(config).eval()
    return LoadedModel(model, tokenizer, f"SAGE {preset}, freshly initialised (seed {seed})", trained=False)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def load_model(
    name_or_path: str | None = None,
    dtype: torch.dtype | str = "auto",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    allow_mismatched_weights: bool = False,
) -> LoadedModel:
    """Loads the model to explain.

    Args:
        name_or_path: None for the model that ships with the package (a fresh `pico` until one is
            trained), a SAGE preset name prefixed with `preset:` (e.g. `preset:pico`, untrained), a
            local folder holding a Hugging Face checkpoint (config.json, *.safetensors, tokenizer),
            or a hub id (needs network access or a filled cache).
        dtype: torch dtype of the weights ("auto": as stored).
        attn_implementation: "eager", "sdpa", ... (None: the library's default).
        trust_remote_code: allow custom modelling code from the checkpoint; off unless you ask.
        allow_mismatched_weights: load even when tensors are missing, unexpected or of another shape than
            config.json says (those are left randomly initialised); off: that is a ValueError.

    Raises:
        FileNotFoundError: If there is no model (or tokenizer) there.
        ValueError: If the weights are damaged (a checkpoint's checksums differ, a tensor holds NaN or
            infinity) or do not fit the config; the message names the file or tensor.
    """
    if name_or_path is None:
        if (shipped_model_dir() / "config.json").is_file():
            return _from_pretrained(str(shipped_model_dir()), dtype, attn_implementation, False, trained=True)
        return fresh_sage_model("pico")
    if name_or_path.startswith("preset:"):
        preset = name_or_path.removeprefix("preset:")
        if preset not in PRESETS:
            raise ValueError(f"unknown SAGE preset {preset!r}; choose one of {sorted(PRESETS)}")
        return fresh_sage_model(preset)
    path = Path(name_or_path).expanduser()
    looks_local = path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_local and not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no model at {name_or_path!r}: expected a folder with config.json and *.safetensors "
            "(as written by model.save_pretrained)"
        )
    if looks_local and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"the model at {name_or_path!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save it beside "
            f"the weights with tokenizer.save_pretrained({name_or_path!r})"
        )
    if looks_local and (path / "checkpoint.json").is_file():  # a training checkpoint: its manifest has checksums
        from .train.checkpoint import CorruptCheckpointError, verify_checkpoint

        try:
            verify_checkpoint(path)
        except CorruptCheckpointError as error:
            raise ValueError(f"{error}: pass another checkpoint of the run") from None
    return _from_pretrained(
        name_or_path,
        dtype,
        attn_implementation,
        trust_remote_code,
        trained=True,
        allow_mismatch=allow_mismatched_weights,
    )


def _from_pretrained(
    name: str,
    dtype: torch.dtype | str,
    attn_implementation: str | None,
    trust_remote_code: bool,
    trained: bool,
    allow_mismatch: bool = False,
) -> LoadedModel:
    kwargs = dict(dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        if (Path(name) / "quanto_qmap.json").is_file():  # written by `sage-nano quantize`
            from .quantize import load_quantized

            model = load_quantized(name)
        else:
            model = _checked_from_pretrained(name, allow_mismatch, kwargs)
        tokenizer = _load_tokenizer(name, trust_remote_code)
    except SafetensorError as error:
        raise ValueError(f"the weights in {name!r} are corrupt or truncated ({error}); save them again") from error
    except OSError as error:
        raise FileNotFoundError(
            f"cannot load {name!r}: {error}. Pass a local folder written by save_pretrained, or a hub id "
            "reachable from this machine"
        ) from error
    _refuse_non_finite(model, name)
    from .inverse.calibration import load_calibration

    return LoadedModel(model.eval(), tokenizer, name, trained=trained, calibration=load_calibration(name))


def _checked_from_pretrained(name: str, allow_mismatch: bool, kwargs: dict) -> PreTrainedModel:
    """`from_pretrained`, refusing weights that do not fit the config: transformers would leave the missing
    or reshaped tensors random and say so only in a log table."""
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its load report table: the error below says it in one line
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            name, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    problems = [
        f"{len(keys)} {kind} tensor(s) ({', '.join(_key_names(keys)[:3])}{', ...' if len(keys) > 3 else ''})"
        for kind, keys in (
            ("missing", info.get("missing_keys")),
            ("unexpected", info.get("unexpected_keys")),
            ("reshaped", info.get("mismatched_keys")),
        )
        if keys
    ]
    if problems and not allow_mismatch:
        model_type = getattr(model.config, "model_type", "?")
        raise ValueError(
            f"the weights in {name!r} do not fit its config.json (model_type {model_type!r}): "
            f"{'; '.join(problems)}. Use the config.json saved with these weights, or load anyway with "
            "allow_mismatched_weights=True (sage-nano explain --allow-mismatched-weights): those tensors stay random"
        )
    return model


def _key_names(keys) -> list[str]:
    """Tensor names from transformers' loading info (a mismatched key comes with its two shapes)."""
    return sorted(key[0] if isinstance(key, tuple) else str(key) for key in keys)


def _refuse_non_finite(model: PreTrainedModel, name: str) -> None:
    """A tensor holding NaN or infinity makes every output NaN, which reads as "no answer" further on."""
    for tensor_name, param in model.named_parameters():
        if param.is_floating_point() and not torch.isfinite(param).all():
            raise ValueError(f"the weights in {name!r} are damaged: {tensor_name} holds NaN or infinite values")


def _load_tokenizer(name: str, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except ValueError as error:  # e.g. a tokenizer.json that is not JSON: "Expecting value: line 1 column 1"
        folder = Path(name)
        unreadable = [
            str(folder / file) for file in TOKENIZER_FILES if file.endswith(".json") and not _is_json(folder / file)
        ]
        raise ValueError(f"cannot read the tokenizer in {', '.join(unreadable) or repr(name)}: {error}") from error


def _is_json(path: Path) -> bool:
    """Whether `path` is missing (nothing to blame) or holds valid JSON."""
    import json

    try:
        json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (ValueError, UnicodeDecodeError):
        return False
    return True
