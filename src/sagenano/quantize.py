"""4- and 8-bit weights with optimum-quanto, saved as a folder that `load_model` (and so `explain`, `eval` and
`serve`, with the same `--model` flag) reads back.

Why optimum-quanto, measured on this CPU (SAGE pico, 2026-11-27): bitsandbytes 0.50 NF4 stopped inside its CPU
kernel on the SAGE layer shapes ("N must be divisible by block_n"); torchao's int4 has no CPU kernel here; quanto's
qint4 and qint8 ran every shape, kept autograd to the embeddings (which `explain` needs), and round-tripped through
safetensors. 4-bit weights are quantized from bf16 (the layers quanto leaves alone — embeddings, norms — stay bf16);
8-bit from fp32, because quanto's int8 CPU matmul crashed (segmentation fault) on a bf16 model read back from disk.

Left unquantized: the LM head when tied to the embeddings, SAGE's `step_proj` (eq. 14 reads its weight directly), and
linear layers whose output width is not a multiple of 16 (see `kept_layers`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel

BITS = (4, 8)
QMAP_FILE = "quanto_qmap.json"
KEEP = ["*step_proj"]
BASE_DTYPE = {4: torch.bfloat16, 8: torch.float32}


@dataclass
class Quantized:
    """What `quantize` wrote: the folder, the layers quantized, and the weight bytes before and after."""

    out: Path
    bits: int
    layers: int
    bytes_before_bf16: int
    bytes_after: int


def is_quantized(model: PreTrainedModel) -> bool:
    from optimum.quanto.nn import QModuleMixin

    return any(isinstance(m, QModuleMixin) for m in model.modules())


def weight_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and persistent buffers, as stored (a tied tensor counted once; quantized weights
    counted by their packed data and scales)."""
    seen, total = set(), 0
    for tensor in model.state_dict().values():
        for part in _storage_parts(tensor):
            key = (part.untyped_storage().data_ptr(), part.storage_offset(), part.numel())
            if key not in seen:
                seen.add(key)
                total += part.numel() * part.element_size()
    return total


def _storage_parts(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors a (possibly quantized, subclassed) tensor is made of."""
    if type(tensor) is torch.Tensor or (isinstance(tensor, nn.Parameter) and type(tensor.data) is torch.Tensor):
        return [tensor]
    inner, _ = tensor.__tensor_flatten__()
    return [p for name in inner for p in _storage_parts(getattr(tensor, name))]


def kept_layers(model: nn.Module) -> list[str]:
    """Patterns and names of the layers left in full precision: KEEP, the LM head when it is tied to the embeddings
    (quanto leaves embeddings alone), and linear layers with an output width that is not a multiple of 16 (quanto's
    CPU int4 packing refuses them: SAGE's meta-head projection to 2, the MoE gate; a negligible share of weights)."""
    narrow = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features % 16]
    tied = getattr(getattr(model, "config", None), "tie_word_embeddings", True)
    return KEEP + (["lm_head"] if tied else []) + narrow


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the linear layers quanto will quantize."""
    from fnmatch import fnmatch

    keep = kept_layers(model)
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and not any(fnmatch(name, pattern) for pattern in keep)]  # fmt: skip


def estimated_int4_bytes(model: nn.Module) -> int:
    """Weight bytes after 4-bit quantization, from shapes alone (works on the meta device): half a byte per quantized
    weight plus a bf16 scale and shift per group of 128 (quanto's qint4 layout), every other parameter in bf16.
    Checked against real quantization in bench/quantize.py (pico/micro/small)."""
    names = set(quantizable_layers(model))
    quantized = sum(m.weight.numel() for name, m in model.named_modules() if name in names)
    total = sum(p.numel() for p in model.parameters())
    return int(quantized * (0.5 + 4 / 128) + (total - quantized) * 2)


def quantize(model_path: str | None, bits: int, out: Path) -> Quantized:
    """Quantizes a model's linear layers to `bits` and writes model, tokenizer and calibration to `out`."""
    from optimum.quanto import qint4, qint8
    from optimum.quanto.models import QuantizedModelForCausalLM

    from .loading import load_model, shipped_model_dir

    if bits not in BITS:
        raise ValueError(f"--bits must be 4 or 8, got {bits}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new --out folder")
    loaded = load_model(model_path, dtype=BASE_DTYPE[bits])
    model = loaded.model.to(BASE_DTYPE[bits])
    if is_quantized(model):
        raise ValueError(f"{loaded.source} is already quantized; quantize the full-precision model instead")
    layers = quantizable_layers(model)
    if not layers:
        kinds = sorted({type(m).__name__ for m in model.modules() if len(list(m.children())) == 0})
        raise ValueError(
            f"{loaded.source} has no nn.Linear layers that optimum-quanto can quantize (its layers: "
            f"{', '.join(kinds)}); GPT-2's Conv1D, for one, is not supported"
        )
    bf16_bytes = sum(p.numel() * 2 for p in {p.data_ptr(): p for p in model.parameters()}.values())
    keep = kept_layers(model)
    wrapped = QuantizedModelForCausalLM.quantize(model, weights={4: qint4, 8: qint8}[bits], exclude=keep)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        wrapped.save_pretrained(staging)
        loaded.tokenizer.save_pretrained(staging)
        source = Path(model_path) if model_path else shipped_model_dir()
        if (source / "calibration.json").is_file():
            shutil.copy(source / "calibration.json", staging / "calibration.json")
        (staging / "quantization.json").write_text(json.dumps(
            {"library": "optimum-quanto", "bits": bits, "source": loaded.source, "kept": keep,
             "base_dtype": str(BASE_DTYPE[bits]).removeprefix("torch.")}, indent=2))  # fmt: skip
        if out.exists():
            out.rmdir()
        staging.rename(out)  # the folder appears whole or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Quantized(out=out, bits=bits, layers=len(layers), bytes_before_bf16=bf16_bytes,
                     bytes_after=weight_bytes(wrapped._wrapped))  # fmt: skip


def load_quantized(path: str) -> PreTrainedModel:
    """A model written by `quantize` (a folder with quanto_qmap.json)."""
    try:
        from optimum.quanto.models import QuantizedModelForCausalLM
    except ImportError as error:
        raise ValueError(f"{path} holds optimum-quanto weights: pip install -e '.[quantize]' to read them") from error

    return QuantizedModelForCausalLM.from_pretrained(path)._wrapped.eval()
