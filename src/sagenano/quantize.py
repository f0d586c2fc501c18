"""4- and 8-bit weights with optimum-quanto, saved as a folder that `load_model` (and so `explain`, `eval` and
`serve`, with the same `--model` flag) reads back.

Why optimum-quanto: of the CPU 4-bit libraries tried (docs/measurements.md), only quanto ran every SAGE layer shape,
kept autograd to the embeddings (which `explain` needs) and round-tripped through safetensors. 4-bit weights are
quantized from bf16 (norms stay bf16); 8-bit from fp32, because quanto's int8 CPU matmul crashed (segmentation fault) on
a bf16 model read back from disk.

Quanto quantizes `nn.Linear` layers only; the token embeddings go through `QEmbedding` and transformers' `Conv1D`
(GPT-2's linear layers, their weight stored transposed) through `QConv1D`, quanto modules registered with quanto's
own extension point (`register_qmodule`), so they save, load and requantize like the rest. When the LM
head is tied to the embeddings, both read one quantized table (`tie_quantized_head`): on the shipped pico the
embedding table is a fifth of the weights, and a bf16 copy of it kept 4-bit weights at 0.43x of bf16.

Left unquantized: SAGE's `step_proj` (eq. 14 reads its weight directly), and linear layers and embeddings whose
output width (vocabulary, for an embedding) is not a multiple of 16 (see `kept_layers`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

if TYPE_CHECKING:
    from .loading import LoadedModel

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
    """Bytes of all parameters and persistent buffers as held in memory (a tied tensor counted once; quantized weights
    counted by their packed data and scales). Parameters are read from the modules, not from a state dict: quanto
    writes some packed layouts out as fresh tensors, which would count a shared table once per module."""
    saved = set(model.state_dict(keep_vars=True))
    buffers = [buffer for name, buffer in model.named_buffers() if name in saved]  # the persistent ones
    seen, total = set(), 0
    for tensor in [*model.parameters(), *buffers]:
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


def _output_width(module: nn.Module) -> int | None:
    """A quantizable layer's output width (an embedding's: its vocabulary); None for any other module."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, Conv1D):
        return module.nf
    if isinstance(module, nn.Embedding):
        return module.num_embeddings
    return None


def _input_width(module: nn.Module) -> int:
    """A quantizable layer's input width: the length of the weight rows quanto quantizes in groups."""
    return module.nx if isinstance(module, Conv1D) else module.weight.shape[1]


def kept_layers(model: nn.Module) -> list[str]:
    """Patterns and names of the layers left in full precision: KEEP, and linear layers and embeddings with an output
    width that is not a multiple of 16 (quanto's CPU int4 packing refuses them: SAGE's meta-head projection to 2,
    the MoE gate; a negligible share of weights)."""
    narrow = [name for name, m in model.named_modules() if (_output_width(m) or 16) % 16]
    return KEEP + narrow


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the linear layers and embeddings that will be quantized."""
    from fnmatch import fnmatch

    keep = kept_layers(model)
    return [
        name
        for name, m in model.named_modules()
        if _output_width(m) is not None and not any(fnmatch(name, pattern) for pattern in keep)
    ]


def _inner_linear(model: PreTrainedModel, names: list[str]) -> list[str]:
    """Of the named layers, the linear ones (nn.Linear, transformers' Conv1D) other than the LM head."""
    modules, head = dict(model.named_modules()), model.get_output_embeddings()
    return [n for n in names if isinstance(modules[n], (nn.Linear, Conv1D)) and modules[n] is not head]


def _nothing_to_quantize(model: PreTrainedModel, source: str) -> str:
    """Why a model has no linear layer to quantize but its LM head, naming what it has instead."""
    linear = _inner_linear(model, [name for name, _ in model.named_modules()])
    if linear:
        names = ", ".join(linear[:3]) + (", ..." if len(linear) > 3 else "")
        has = f"its {len(linear)} ({names}) are all left out (they match {KEEP} or have another output width)"
    else:
        head = model.get_output_embeddings()
        leaves = [m for m in model.modules() if not list(m.children()) and not isinstance(m, nn.ModuleList)]
        kinds = sorted({type(m).__name__ for m in leaves if m is not head})
        has = f"it has none (its other layer types: {', '.join(kinds)})"
    return (
        f"{source} has no linear layer to quantize besides its LM head: quantize takes nn.Linear and transformers' "
        f"Conv1D layers whose output width is a multiple of 16, and {has}. Use the model unquantized"
    )


def _group_size(in_features: int) -> int:
    """quanto's qint4 group: 128 columns, or the largest of 96, 64, 32 that divides the row (else the whole row)."""
    for size in (128, 96, 64, 32):
        if in_features % size == 0 or (size == 128 and in_features <= 128):
            return min(size, in_features)
    return in_features


def estimated_int4_bytes(model: nn.Module) -> int:
    """Weight bytes after 4-bit quantization, from shapes alone (works on the meta device): half a byte per quantized
    weight plus a bf16 scale and shift per group (quanto's qint4 layout, `_group_size`), every other parameter in
    bf16, a tied LM head counted once. Checked against real quantization in bench/quantize.py (pico/micro/small)."""
    names = set(quantizable_layers(model))
    seen, total = set(), 0
    for name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            if name in names and param_name == "weight":
                total += param.numel() * (0.5 + 4 / _group_size(_input_width(module)))
            else:
                total += param.numel() * 2
    return int(total)


def _register_quantized_embedding() -> None:
    """Makes quanto quantize nn.Embedding (with `QEmbedding`); idempotent, and needed before quantizing and before
    reading a quantized folder back (quanto requantizes modules by their registered class)."""
    from optimum.quanto.nn import qmodule

    if nn.Embedding in qmodule._QMODULE_TABLE:
        return

    @qmodule.register_qmodule(nn.Embedding)
    class QEmbedding(qmodule.QModuleMixin, nn.Embedding):
        """An embedding table stored quantized; a lookup dequantizes the table (small next to one forward pass)."""

        bias = None  # QModuleMixin saves and loads a bias; an embedding has none

        @classmethod
        def qcreate(cls, module, weights, activations=None, optimizer=None, device=None):
            if weights is None:
                return None
            return cls(
                module.num_embeddings,
                module.embedding_dim,
                padding_idx=module.padding_idx,
                dtype=module.weight.dtype,
                device=device,
                weights=weights,
                optimizer=optimizer,
            )

        @classmethod
        def from_module(cls, module, weights=None, activations=None, optimizer=None):
            # QModuleMixin.from_module, less its bias copy (nn.Embedding has no bias attribute).
            created = _empty_quantized(cls, module, weights, activations, optimizer)
            if created is None:
                return None
            with torch.no_grad():
                created.weight = module.weight
            return created

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return F.embedding(input, self.qweight.dequantize(), self.padding_idx)


def _empty_quantized(cls, module: nn.Module, weights, activations, optimizer):
    """The first half of quanto's `QModuleMixin.from_module`: the quantized module `cls` for `module`, on its device,
    with unit input and output scales and its weights still to set (None when quanto declines the module)."""
    created = cls.qcreate(module, weights, activations, optimizer, device="meta")
    if created is None:
        return None
    created = created.to_empty(device=module.weight.device)
    created.input_scale = torch.ones_like(created.input_scale)
    created.output_scale = torch.ones_like(created.output_scale)
    return created


def _register_quantized_conv1d() -> None:
    """Makes quanto quantize transformers' `Conv1D` (GPT-2's linear layers: y = x @ W + b, W of shape (in, out)) as a
    linear layer holding W transposed, so quanto's linear kernels run it; idempotent, and needed before quantizing and
    before reading a quantized folder back (quanto requantizes modules by their registered class)."""
    from optimum.quanto.nn import qmodule

    if Conv1D in qmodule._QMODULE_TABLE:
        return

    @qmodule.register_qmodule(Conv1D)
    class QConv1D(qmodule.QModuleMixin, nn.Linear):
        """A `Conv1D` as a quantized linear layer: its weight (in, out) is stored transposed, (out, in)."""

        @classmethod
        def qcreate(cls, module, weights, activations=None, optimizer=None, device=None):
            return cls(
                module.nx,
                module.nf,
                bias=True,
                dtype=module.weight.dtype,
                device=device,
                weights=weights,
                activations=activations,
                optimizer=optimizer,
                quantize_input=True,
            )

        @classmethod
        def from_module(cls, module, weights=None, activations=None, optimizer=None):
            # QModuleMixin.from_module, with the weight transposed to nn.Linear's (out, in).
            created = _empty_quantized(cls, module, weights, activations, optimizer)
            with torch.no_grad():
                created.weight = nn.Parameter(module.weight.t().contiguous(), module.weight.requires_grad)
                created.bias = module.bias
            return created

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return F.linear(input, self.qweight, bias=self.bias)


def tie_quantized_head(model: PreTrainedModel) -> bool:
    """Points the LM head at the embeddings' quantized table when the model ties them and both are quantized (quanto
    quantized each on its own, from the same weights, and unties them on save). True when it tied them."""
    from optimum.quanto.nn import QModuleMixin

    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    quantized = isinstance(head, QModuleMixin) and isinstance(embeddings, QModuleMixin)
    if not quantized or head.weight.shape != embeddings.weight.shape:
        return False
    head.weight = embeddings.weight
    return True


def quantize_model(model: PreTrainedModel, bits: int):
    """The model with its linear layers and embeddings quantized to `bits` (quanto's wrapper; `._wrapped` is the
    model), a tied LM head sharing the embeddings' table."""
    from optimum.quanto import qint4, qint8
    from optimum.quanto.models import QuantizedModelForCausalLM

    _register_quantized_embedding()
    _register_quantized_conv1d()
    tied = getattr(model.config, "tie_word_embeddings", False)
    wrapped = QuantizedModelForCausalLM.quantize(model, weights={4: qint4, 8: qint8}[bits], exclude=kept_layers(model))
    if tied:
        tie_quantized_head(wrapped._wrapped)
    # Inference weights: quanto's matmul backward computes a weight's gradient whenever it requires one.
    wrapped._wrapped.requires_grad_(False)
    return wrapped


def quantize(loaded: LoadedModel, bits: int, out: Path) -> Quantized:
    """Quantizes a loaded model's linear layers to `bits` and writes model, tokenizer and calibration (when the
    model's folder has one) to `out`. The model is quantized in place: `loaded` holds the quantized model after."""
    if bits not in BITS:
        raise ValueError(f"--bits must be 4 or 8, got {bits}")
    dtype = BASE_DTYPE[bits]
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new --out folder")
    model = loaded.model.to(dtype)
    if is_quantized(model):
        raise ValueError(f"{loaded.source} is already quantized; quantize the full-precision model instead")
    layers = quantizable_layers(model)
    if not _inner_linear(model, layers):  # nothing but the ends (embeddings, LM head)
        raise ValueError(_nothing_to_quantize(model, loaded.source))
    bf16_bytes = sum(p.numel() * 2 for p in {p.data_ptr(): p for p in model.parameters()}.values())
    keep = kept_layers(model)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    wrapped = quantize_model(model, bits)
    tied = tied and wrapped._wrapped.get_output_embeddings().weight is wrapped._wrapped.get_input_embeddings().weight
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        wrapped.save_pretrained(staging)
        loaded.tokenizer.save_pretrained(staging)
        source = Path(loaded.source)
        if (source / "calibration.json").is_file():
            shutil.copy(source / "calibration.json", staging / "calibration.json")
        (staging / "quantization.json").write_text(
            json.dumps(
                {
                    "library": "optimum-quanto",
                    "bits": bits,
                    "source": loaded.source,
                    "kept": keep,
                    "base_dtype": str(BASE_DTYPE[bits]).removeprefix("torch."),
                    "tied_head": tied,
                },
                indent=2,
            )
        )
        if out.exists():
            out.rmdir()
        staging.rename(out)  # the folder appears whole or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Quantized(
        out=out, bits=bits, layers=len(layers), bytes_before_bf16=bf16_bytes, bytes_after=weight_bytes(wrapped._wrapped)
    )


def load_quantized(path: str) -> PreTrainedModel:
    """A model written by `quantize` (a folder with quanto_qmap.json), its LM head tied back to the embeddings' table
    when it was tied when quantized (quanto saves the shared table once and reads it back untied)."""
    try:
        from optimum.quanto.models import QuantizedModelForCausalLM
    except ImportError as error:
        raise ValueError(f"{path} holds optimum-quanto weights: pip install -e '.[quantize]' to read them") from error

    _register_quantized_embedding()
    _register_quantized_conv1d()
    model = QuantizedModelForCausalLM.from_pretrained(path)._wrapped.eval().requires_grad_(False)
    settings = Path(path) / "quantization.json"
    tied = settings.is_file() and json.loads(settings.read_text()).get("tied_head")
    if tied and not tie_quantized_head(model):
        raise ValueError(f"{path}: quantization.json says the LM head shares the embeddings, but they differ")
    return model
