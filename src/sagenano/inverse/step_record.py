"""The paper's Table 1 record for one reasoning step, on request: attention, its gradient, value contributions.

`record_step(model, tokenizer, report, step)` re-reads the report's chain by teacher forcing and keeps only
what the step needs: the attention rows of the positions that predict the step's tokens (its queries), the
gradient of the step's NLL with respect to those attention weights, what each context position's values
wrote through those rows, the step's decision scores, and the attention the model would use next on each
alternative branch of the step's first decision point. One forward and one backward pass give the first
three; one batched forward pass over the forced alternatives gives the last.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..attention import attention_modules, eager_attention
from ..decoding import Chain
from .measure import embeddings_require_grad
from .report import Report, Step

FORMAT = "sagenano.step_record"
FORMAT_VERSION = "1"
_TENSORS = ("attention", "attention_grad", "value_contributions", "decision_scores", "alternative_attention")


# ---------------------------------------------------------------------------------------------------
# The record


@dataclass
class NamedTensor:
    """A tensor with one name per dimension, e.g. ("layer", "head", "query", "key")."""

    data: torch.Tensor
    dims: tuple[str, ...]

    def __post_init__(self) -> None:
        self.dims = tuple(self.dims)
        if len(self.dims) != self.data.dim():
            raise ValueError(f"{len(self.dims)} dimension names {self.dims} for a {self.data.dim()}-d tensor")

    @property
    def shape(self) -> dict[str, int]:
        return dict(zip(self.dims, self.data.shape, strict=True))


@dataclass
class StepRecord:
    """What the model did in one reasoning step (the paper's Table 1), float32 on the CPU.

    Positions index the full sequence `prompt_ids + token ids`; K is the context of the step's last query,
    P + token_end - 1 positions. Earlier query rows are zero beyond their own (causal) context.

    Fields:
        step: index of the step in `report.steps`.
        positions: the input positions that predict the step's tokens (the queries), P - 1 + t.
        attention: (layer, head, query, key) the queries' attention weights over the K context positions
            (SAGE: the token heads; concept heads attend over learnt concepts, not the context).
        attention_grad: (layer, head, query, key) d(step NLL)/d(attention weight), step NLL = −Σ log p(token)
            over the step's tokens, each weight taken as an independent variable of the forward pass.
        value_contributions: (layer, key, hidden) per layer and context position k,
            Σ_h W_O^(h) · v[h, k] · Σ_q a[h, q, k]: what position k's value vectors wrote into the residual stream
            through the step's query rows, summed over heads and queries. v are the value states the layer
            attends over (after the value projection and its bias; grouped-query heads share their key/value
            head) and W_O^(h) the output projection's columns of head h, its bias left out. Summed over keys it
            is Σ_q of the layer's attention output at the queries, less the bias (SAGE: less the concept
            heads). None for model families whose values and output projection are not known
            (see `value_source`).
        decision_scores: (token,) the normalised entropy of each of the step's tokens, as the report has it.
        alternative_attention: (alternative, layer, head, key) at the step's first decision point (generated
            token d): the attention row of position P + d, holding each alternative token forced in place of
            the chosen one, over its P + d + 1 context positions: the pattern the model would use next on that
            branch. Shape (0, layer, head, 0) when the step has no decision point with alternatives.
        decision_point: d, the generated-token index of that decision point (None when there is none).
        alternative_ids: the forced token ids, one per row of `alternative_attention`.
    """

    step: int
    positions: list[int]
    attention: NamedTensor
    attention_grad: NamedTensor
    value_contributions: NamedTensor | None
    decision_scores: NamedTensor
    alternative_attention: NamedTensor
    decision_point: int | None = None
    alternative_ids: list[int] = field(default_factory=list)

    def to_safetensors(self, path: str | os.PathLike) -> None:
        """Writes every tensor, with its dimension names and the other fields as metadata, atomically."""
        path = Path(path)
        tensors, metadata = {}, {"format": FORMAT, "version": FORMAT_VERSION}
        for name in _TENSORS:
            named = getattr(self, name)
            if named is not None:
                tensors[name] = named.data.detach().cpu().contiguous()
                metadata[f"dims.{name}"] = json.dumps(list(named.dims))
        metadata.update(
            step=str(self.step),
            positions=json.dumps(self.positions),
            decision_point=json.dumps(self.decision_point),
            alternative_ids=json.dumps(self.alternative_ids),
        )
        _atomic_save(tensors, metadata, path)

    @classmethod
    def from_safetensors(cls, path: str | os.PathLike) -> StepRecord:
        """Reads a record written by `to_safetensors`."""
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise ValueError(f"{path} is not a step record (no {FORMAT!r} metadata)")
            named = {
                name: NamedTensor(file.get_tensor(name), tuple(json.loads(metadata[f"dims.{name}"])))
                for name in _TENSORS
                if name in file.keys()  # noqa: SIM118  (safe_open has no __contains__)
            }
        return cls(
            step=int(metadata["step"]),
            positions=json.loads(metadata["positions"]),
            value_contributions=named.pop("value_contributions", None),
            decision_point=json.loads(metadata["decision_point"]),
            alternative_ids=json.loads(metadata["alternative_ids"]),
            **named,
        )


def _atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    """safetensors into a temporary file beside `path`, then renamed over it: never a half-written file."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=metadata)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# ---------------------------------------------------------------------------------------------------
# Where the values are


@dataclass
class ValueSource:
    """How to read one attention layer's value states and output projection.

    `module`'s forward output, passed through `to_heads`, gives the (B, kv_heads, T, head_dim) values the layer
    attends over; query head h reads key/value head h // groups; `out_weight` is the (hidden, heads·head_dim)
    part of the output projection that the attended values go through.
    """

    module: nn.Module
    to_heads: Callable[[torch.Tensor], torch.Tensor]
    groups: int
    out_weight: Callable[[], torch.Tensor]


def _split_heads(head_dim: int, start: int = 0, stop: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    def to_heads(output: torch.Tensor) -> torch.Tensor:
        B, T, _ = output.shape
        return output[..., start:stop].reshape(B, T, -1, head_dim).transpose(1, 2)

    return to_heads


def value_source(module: nn.Module) -> ValueSource:
    """The value states and output projection of an attention module: SAGE's `MultiscaleAttention`, GPT-2's
    attention (fused `c_attn`, `c_proj`) and the Llama family (`v_proj`, `o_proj`, grouped-query heads:
    Llama, Mistral, Qwen2 and others built the same way). Any other module raises ValueError."""
    from ..model import MultiscaleAttention

    if isinstance(module, MultiscaleAttention):
        width = module.num_heads * module.head_dim  # token heads; the concept heads' columns come after
        return ValueSource(module.v_proj, _split_heads(module.head_dim), 1, lambda: module.o_proj.weight[:, :width])
    if _is_gpt2_attention(module):
        d = module.embed_dim
        return ValueSource(
            module.c_attn, _split_heads(module.head_dim, 2 * d, 3 * d), 1, lambda: module.c_proj.weight.T
        )
    if _is_llama_like(module):
        groups = int(module.num_key_value_groups)
        return ValueSource(module.v_proj, _split_heads(module.head_dim), groups, lambda: module.o_proj.weight)
    raise ValueError(f"value contributions are not supported for {type(module).__name__}")


def _is_gpt2_attention(module: nn.Module) -> bool:
    names = ("c_attn", "c_proj", "embed_dim", "head_dim", "split_size")
    return (
        all(hasattr(module, n) for n in names)
        and not getattr(module, "is_cross_attention", True)
        and not getattr(module, "reorder_and_upcast_attn", False)
        and tuple(module.c_attn.weight.shape) == (module.embed_dim, 3 * module.embed_dim)
    )


def _is_llama_like(module: nn.Module) -> bool:
    """Plain `v_proj` → attention → `o_proj`, nothing between (a `v_norm` or attention sinks would be)."""
    return (
        isinstance(getattr(module, "v_proj", None), nn.Linear)
        and isinstance(getattr(module, "o_proj", None), nn.Linear)
        and isinstance(getattr(module, "head_dim", None), int)
        and isinstance(getattr(module, "num_key_value_groups", None), int)
        and not any(hasattr(module, n) for n in ("v_norm", "sinks"))
    )


def _value_sources(modules: list[nn.Module]) -> list[ValueSource] | None:
    try:
        return [value_source(m) for m in modules]
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------
# Capturing


class _Capture:
    """Forward hooks: every attention layer's weights (graph kept) and, when known, its value states."""

    def __init__(self) -> None:
        self.weights: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    @contextlib.contextmanager
    def hooks(self, layers: list[tuple[str, nn.Module, int]], sources: list[ValueSource] | None) -> Iterator[None]:
        handles = [module.register_forward_hook(self._on_attention(index)) for _, module, index in layers]
        for source in sources or []:
            handles.append(source.module.register_forward_hook(self._on_values(source)))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _on_attention(self, index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, output: tuple) -> None:
            if output[index] is None:
                raise RuntimeError("attention weights are empty: the model is not running eager attention")
            self.weights.append(output[index])  # (B, H, q, kv)

        return hook

    def _on_values(self, source: ValueSource) -> Callable:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self.values.append(source.to_heads(output.detach()))  # (B, kv_heads, T, hd)

        return hook


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the block, then the mode the model had."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _last_logits(model: PreTrainedModel, ids: torch.Tensor, keep: int, asking: dict[str, bool]) -> torch.Tensor:
    """(R, keep, V) logits at the last `keep` positions of each row; only those go through the LM head. `asking`:
    what the pass needs to return attention weights (`eager_attention`)."""
    kwargs = {"use_cache": False, **asking}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        kwargs["logits_to_keep"] = keep
    return model(input_ids=ids.to(model.device), **kwargs).logits[:, -keep:]


# ---------------------------------------------------------------------------------------------------
# The entry point


def record_step(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, report: Report, step: int) -> StepRecord:
    """The Table 1 record of `report.steps[step]` (0-based), measured on `model` by teacher forcing the report's
    chain; see `StepRecord` for what each field holds. `tokenizer` is the report's, kept for symmetry with
    `explain`; nothing here needs to encode text."""
    if not report.steps:
        raise ValueError("the report has no steps to record")
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < len(report.steps):
        last = len(report.steps) - 1
        raise ValueError(f"step {step!r} is out of range: the report has {last + 1} steps, valid steps are 0..{last}")
    span = report.steps[step]
    chain = Chain.from_report(report)
    tokens = range(span.token_start, span.token_end)
    layers = attention_modules(model)
    sources = _value_sources([module for _, module, _ in layers])
    with _evaluating(model), eager_attention(model, True) as asking:
        attention, grads, contributions = _step_pass(model, chain, tokens, layers, sources, asking)
        point, alternative_ids, alternative_rows = _alternatives(
            model, report, chain, span, layers, attention.shape[1], asking
        )
    entropies = torch.tensor([report.tokens[t].entropy for t in tokens], dtype=torch.float32)
    return StepRecord(
        step=step,
        positions=chain.predicting(tokens),
        attention=NamedTensor(attention, ("layer", "head", "query", "key")),
        attention_grad=NamedTensor(grads, ("layer", "head", "query", "key")),
        value_contributions=None if contributions is None else NamedTensor(contributions, ("layer", "key", "hidden")),
        decision_scores=NamedTensor(entropies, ("token",)),
        alternative_attention=NamedTensor(alternative_rows, ("alternative", "layer", "head", "key")),
        decision_point=point,
        alternative_ids=alternative_ids,
    )


def _step_pass(
    model: PreTrainedModel,
    chain: Chain,
    tokens: range,
    layers: list[tuple[str, nn.Module, int]],
    sources: list[ValueSource] | None,
    asking: dict[str, bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One forward pass over the chain up to the step's last query, one backward pass from the step's NLL.

    The queries are then the last len(tokens) positions, so only their logits are computed. Gradients are
    taken with `torch.autograd.grad` on the captured weights: no parameter gradient is accumulated.
    """
    context = chain.prompt_len + tokens.stop - 1  # K: the last query's context
    ids = torch.cat([chain.prompt_ids, chain.token_ids])[:context]
    targets = chain.token_ids[tokens.start : tokens.stop].to(model.device)
    capture = _Capture()
    with embeddings_require_grad(model), capture.hooks(layers, sources):
        logp = _last_logits(model, ids[None], len(tokens), asking)[0].float().log_softmax(-1)
        nll = -logp.gather(1, targets[:, None]).sum()
        grads = torch.autograd.grad(nll, capture.weights, allow_unused=True)
    if any(g is None for g in grads):
        raise RuntimeError("an attention layer's returned weights do not feed its output; cannot take gradients")
    rows = slice(context - len(tokens), context)
    attention = torch.stack([w[0, :, rows].detach().float() for w in capture.weights])  # (L, H, q, K)
    gradient = torch.stack([g[0, :, rows].float() for g in grads])
    contributions = None if sources is None else _value_contributions(attention, capture.values, sources)
    return attention.cpu(), gradient.cpu(), None if contributions is None else contributions.cpu()


def _value_contributions(
    attention: torch.Tensor, values: list[torch.Tensor], sources: list[ValueSource]
) -> torch.Tensor:
    """(L, K, D): per layer and key, Σ_h W_O^(h) · v[h, k] · Σ_q a[h, q, k] (see `StepRecord`)."""
    layers = []
    for rows, value, source in zip(attention, values, sources, strict=True):
        value = value[0].float().repeat_interleave(source.groups, dim=0)  # (H, K, hd): kv head per query head
        per_head = rows.sum(1)[..., None] * value  # (H, K, hd): Σ_q a[h, q, k] · v[h, k]
        weight = source.out_weight().detach().float()  # (D, H·hd)
        layers.append(per_head.transpose(0, 1).flatten(1) @ weight.T)  # (K, D)
    return torch.stack(layers)


@torch.no_grad()
def _alternatives(
    model: PreTrainedModel,
    report: Report,
    chain: Chain,
    span: Step,
    layers: list[tuple[str, nn.Module, int]],
    heads: int,
    asking: dict[str, bool],
) -> tuple[int | None, list[int], torch.Tensor]:
    """The step's first decision point with alternatives, their ids, and the (A, L, H, P + d + 1) rows of the
    position holding each forced alternative, from one batched forward pass."""
    points = [p for p in report.decision_points if span.token_start <= p.position < span.token_end and p.alternatives]
    if not points:
        return None, [], torch.zeros(0, len(layers), heads, 0)
    point = min(points, key=lambda p: p.position)
    ids = [a.token_id for a in point.alternatives]
    prefix = torch.cat([chain.prompt_ids, chain.token_ids[: point.position]])
    rows = torch.cat([prefix[None].expand(len(ids), -1), torch.tensor(ids)[:, None]], dim=1)
    capture = _Capture()
    with capture.hooks(layers, None):
        _last_logits(model, rows, 1, asking)
    last = torch.stack([w[:, :, -1].float() for w in capture.weights], dim=1)  # (A, L, H, P + d + 1)
    return point.position, ids, last.cpu()
