"""The SAGE-nano architecture (the paper's §4) as a Hugging Face causal LM, with named hook points.

Forward stack: multiscale attention (token heads in named groups + concept heads, eq. 12), the
reasoning FFN of gated sub-networks (eq. 13) and LayerNorm adapted to the reasoning-step index
(eq. 14). On top: the inverse analysis stack (bidirectional over the chain), the meta-cognitive head
(per-token decision score and confidence) and reconstructed step logits for the consistency loss
(eq. 11). Every part can be switched off by `SageConfig` for the ablations.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import ModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .config import SageConfig


class HookPoint(nn.Identity):
    """An identity module whose forward hooks read or edit one activation (TransformerLens style).

    `name` is filled in by `SagePreTrainedModel.post_init` with the module's dotted path.
    """

    name: str = ""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # Without hooks there is nothing to run: skip nn.Module's call machinery on the hot path.
        if not (self._forward_hooks or self._forward_pre_hooks):
            return x
        return super().__call__(x)


# ---------------------------------------------------------------------------------------------------
# Building blocks


class RotaryEmbedding(nn.Module):
    """Rotary position embedding: cos / sin tables for the given positions."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", self.frequencies(), persistent=False)

    def frequencies(self) -> torch.Tensor:
        return 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float) / self.head_dim))

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq  # (B, T, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, hd)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates (B, nh, T, hd) queries or keys by (B, T, hd) tables."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


class AdaptiveLayerNorm(nn.Module):
    """LayerNorm scaled by the reasoning-step index (eq. 14): LN(x)·(1 + α·tanh(W_pos·pos + b_pos)).

    W_pos and b_pos start at zero, so a fresh model behaves like a plain LayerNorm.
    """

    def __init__(self, hidden_size: int, eps: float, alpha: float, adaptive: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.alpha = alpha
        self.step_proj = nn.Linear(1, hidden_size) if adaptive else None

    def forward(self, x: torch.Tensor, step_pos: torch.Tensor | None) -> torch.Tensor:
        """`step_pos` is the (B, T, 1) step index as a float tensor."""
        x = self.norm(x)
        if self.step_proj is None or step_pos is None:
            return x
        modulation = torch.tanh(torch.addcmul(self.step_proj.bias, step_pos, self.step_proj.weight[:, 0]))
        return torch.addcmul(x, x, modulation, value=self.alpha)  # x·(1 + α·tanh(W·pos + b))


class SwiGLU(nn.Module):
    """The plain gated MLP (used when the reasoning FFN is off, and in the inverse stack)."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.up = nn.Linear(hidden_size, 2 * intermediate_size, bias=False)
        self.down = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class ReasoningFFN(nn.Module):
    """Gated sub-networks (eq. 13): Σ_k Gate_k(x) ⊙ FFN_k(x), one SwiGLU per named expert.

    The gates are a softmax over the experts per token. All experts run on every token, so their
    up-projections are fused into one matmul and Σ_k g_k·W_down_k(h_k) into one matmul over the
    gate-scaled concatenation [g_1·h_1, ..., g_K·h_K]: the same sum, two matmuls instead of 2K.
    """

    def __init__(self, config: SageConfig) -> None:
        super().__init__()
        self.expert_names = list(config.ffn_experts)
        self.num_experts = len(self.expert_names)
        self.expert_size = config.expert_intermediate_size
        width = self.num_experts * self.expert_size
        self.gate = nn.Linear(config.hidden_size, self.num_experts, bias=False)
        self.up = nn.Linear(config.hidden_size, 2 * width, bias=False)
        self.down = nn.Linear(width, config.hidden_size, bias=False)
        self.hook_gates = HookPoint()  # (B, T, K) expert weights per token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        gates = self.hook_gates(self.gate(x).softmax(dim=-1))  # (B, T, K)
        gate, up = self.up(x).chunk(2, dim=-1)
        hidden = (F.silu(gate) * up).view(B, T, self.num_experts, self.expert_size)  # (B, T, K, I)
        hidden = hidden * gates[..., None].to(hidden.dtype)
        return self.down(hidden.reshape(B, T, -1))


# ---------------------------------------------------------------------------------------------------
# Attention


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention that returns its weights; `attention_mask` is a boolean (B, 1, q, kv) keep-mask."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, nh, q, kv)
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()  # (B, q, nh, hd)
    return out, weights


class MultiscaleAttention(nn.Module):
    """Token heads (in named groups) over the sequence plus concept heads over learnable concepts (eq. 12).

    Token heads use rotary positions and the KV cache. Concept heads query the same hidden states but
    attend over `num_concepts` learnable embeddings, which do not depend on the input and so need no
    cache. Both outputs are concatenated and mixed by one output projection W_O.
    """

    def __init__(self, config: SageConfig, layer_idx: int, is_causal: bool = True) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.is_causal = is_causal
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_concept_heads = config.active_concept_heads
        self.num_key_value_groups = 1
        self.scaling = self.head_dim**-0.5
        self.group_sizes = list(config.head_groups.values())
        d, hd = config.hidden_size, self.head_dim
        self.q_proj = nn.Linear(d, (self.num_heads + self.num_concept_heads) * hd, bias=False)
        self.k_proj = nn.Linear(d, self.num_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, self.num_heads * hd, bias=False)
        self.o_proj = nn.Linear((self.num_heads + self.num_concept_heads) * hd, d, bias=False)
        if self.num_concept_heads:
            self.concepts = nn.Parameter(torch.empty(config.num_concepts, d))
            self.concept_kv = nn.Linear(d, 2 * self.num_concept_heads * hd, bias=False)
        self._concept_kv_cache: torch.Tensor | None = None  # set only inside SageForCausalLM.concepts_computed_once
        self.hook_pattern = HookPoint()  # (B, nh, q, kv) token-head weights; eager path only
        self.hook_concept_pattern = HookPoint()  # (B, nc, q, num_concepts)
        self.hook_group_norms = HookPoint()  # (B, q, G) mean output norm of each head group

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        attn_implementation: str = "sdpa",
        output_group_norms: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        B, T, _ = hidden_states.shape
        hd = self.head_dim
        q = self.q_proj(hidden_states).view(B, T, -1, hd).transpose(1, 2)  # (B, nh + nc, T, hd)
        q, q_concept = q[:, : self.num_heads], q[:, self.num_heads :]
        k = self.k_proj(hidden_states).view(B, T, -1, hd).transpose(1, 2)  # (B, nh, T, hd)
        v = self.v_proj(hidden_states).view(B, T, -1, hd).transpose(1, 2)
        cos, sin = rotary
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, nh, past + T, hd)

        attend = ALL_ATTENTION_FUNCTIONS.get_interface(attn_implementation, eager_attention_forward)
        out, weights = attend(self, q, k, v, attention_mask, scaling=self.scaling, is_causal=self.is_causal)
        if weights is not None:
            weights = self.hook_pattern(weights)
        heads = [out]  # (B, T, nh, hd)
        if self.num_concept_heads:
            heads.append(self._concept_heads(q_concept))
        heads = torch.cat(heads, dim=2)  # (B, T, nh + nc, hd)
        group_norms = self.hook_group_norms(self._group_norms(heads)) if output_group_norms else None
        return self.o_proj(heads.reshape(B, T, -1)), weights, group_norms

    def _concept_keys_values(self) -> torch.Tensor:
        """(2, nc, M, hd) keys and values of the concepts; reused within one `generate` call."""
        if self._concept_kv_cache is not None:
            return self._concept_kv_cache
        nc, hd = self.num_concept_heads, self.head_dim
        return self.concept_kv(self.concepts).view(-1, 2, nc, hd).permute(1, 2, 0, 3)

    def _concept_heads(self, q_concept: torch.Tensor) -> torch.Tensor:
        """(B, nc, T, hd) queries over the learnable concepts -> (B, T, nc, hd)."""
        k, v = self._concept_keys_values()  # each (nc, M, hd)
        weights = (torch.matmul(q_concept, k.transpose(1, 2)) * self.scaling).softmax(dim=-1)  # (B, nc, T, M)
        weights = self.hook_concept_pattern(weights)
        return torch.matmul(weights, v).transpose(1, 2)

    def _group_norms(self, heads: torch.Tensor) -> torch.Tensor:
        """Mean L2 norm of each head group's output, (B, T, G): how much each group writes per token.

        This is the attention summary the inverse stack reads; it exists under SDPA and eager alike.
        """
        norms = heads.float().norm(dim=-1)  # (B, T, nh + nc)
        sizes = [*self.group_sizes, self.num_concept_heads]
        groups = norms.split([n for n in sizes if n], dim=-1)  # empty groups have no heads to summarise
        return torch.stack([g.mean(-1) for g in groups], -1)


def build_attention_mask(
    padding_mask: torch.Tensor | None, q_len: int, kv_len: int, causal: bool, materialize: bool
) -> torch.Tensor | None:
    """Boolean keep-mask (B or 1, 1, q_len, kv_len), or None when SDPA can do without one.

    `padding_mask` is the usual 2D (B, kv_len) mask with 1 for real tokens. Every query may attend to
    itself, so rows of left-padding are never empty (their outputs are ignored anyway).
    """
    has_padding = padding_mask is not None and not bool(padding_mask.all())
    if not has_padding and (q_len == 1 or not causal or (not materialize and q_len == kv_len)):
        return None  # nothing is hidden from any query (one new token, or bidirectional without padding)
    device = padding_mask.device if padding_mask is not None else None
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]  # (q, 1) absolute positions
    k_pos = torch.arange(kv_len, device=device)[None, :]  # (1, kv)
    keep = (k_pos <= q_pos) if causal else torch.ones(q_len, kv_len, dtype=torch.bool, device=device)
    keep = keep[None, None]  # (1, 1, q, kv)
    if has_padding:
        keep = keep & padding_mask[:, None, None, :].bool()
    return keep | (k_pos == q_pos)[None, None]


# ---------------------------------------------------------------------------------------------------
# Blocks and stacks


class SageBlock(GradientCheckpointingLayer):
    """One layer: adaptive LN -> multiscale attention -> adaptive LN -> reasoning FFN, pre-norm residual."""

    def __init__(self, config: SageConfig, layer_idx: int, is_causal: bool = True, reasoning_ffn: bool = True):
        super().__init__()
        ln = dict(eps=config.layer_norm_eps, alpha=config.adaptive_ln_alpha, adaptive=config.use_adaptive_layernorm)
        self.ln_attn = AdaptiveLayerNorm(config.hidden_size, **ln)
        self.attn = MultiscaleAttention(config, layer_idx, is_causal=is_causal)
        self.ln_ffn = AdaptiveLayerNorm(config.hidden_size, **ln)
        use_experts = reasoning_ffn and config.use_reasoning_ffn
        self.ffn = ReasoningFFN(config) if use_experts else SwiGLU(config.hidden_size, config.intermediate_size)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_ffn_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        step_pos: torch.Tensor | None,
        cache: Cache | None = None,
        attn_implementation: str = "sdpa",
        output_group_norms: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        x = self.hook_resid_pre(hidden_states)
        attn_out, weights, group_norms = self.attn(
            self.ln_attn(x, step_pos), rotary, attention_mask, cache, attn_implementation, output_group_norms
        )
        x = x + self.hook_attn_out(attn_out)
        x = x + self.hook_ffn_out(self.ffn(self.ln_ffn(x, step_pos)))
        return self.hook_resid_post(x), weights, group_norms


class InverseAnalysisStack(nn.Module):
    """The inverse analysis layers (eq. 4): read the forward stack, bidirectionally over the whole chain.

    Input per token: the forward stack's final hidden state plus a projection of its attention
    summary (each layer's head-group output norms, L × G features). Positions in `hidden` read a learned
    vector instead, so that what the stack says about them comes from the rest of the chain (eq. 11's
    reconstruction, `SageForCausalLM.forward(hidden_step=...)`).
    """

    def __init__(self, config: SageConfig) -> None:
        super().__init__()
        num_groups = sum(1 for n in [*config.head_groups.values(), config.active_concept_heads] if n)
        summary_features = config.num_hidden_layers * num_groups
        self.summary_proj = nn.Linear(summary_features, config.hidden_size) if config.use_attention_tracking else None
        self.layers = nn.ModuleList(
            SageBlock(config, i, is_causal=False, reasoning_ffn=False) for i in range(config.num_inverse_layers)
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.hidden_position = nn.Parameter(torch.empty(config.hidden_size))  # what a hidden position reads
        self.hook_input = HookPoint()

    def forward(
        self,
        hidden_states: torch.Tensor,
        group_norms: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        padding_mask: torch.Tensor | None,
        step_pos: torch.Tensor | None,
        attn_implementation: str,
        hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        _B, T, _ = hidden_states.shape
        if self.summary_proj is not None:
            hidden_states = hidden_states + self.summary_proj(group_norms.flatten(2).to(hidden_states.dtype))
        if hidden is not None:
            hidden_states = torch.where(hidden[..., None], self.hidden_position.to(hidden_states.dtype), hidden_states)
        x = self.hook_input(hidden_states)
        mask = build_attention_mask(padding_mask, T, T, causal=False, materialize=attn_implementation == "eager")
        for layer in self.layers:
            x, _, _ = layer(x, rotary, mask, step_pos, None, attn_implementation)
        return self.norm(x)


class MetaCognitiveHead(nn.Module):
    """Per-token decision-point and confidence logits (sigmoid gives the score / probability)."""

    def __init__(self, config: SageConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(config.hidden_size, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        decision, confidence = self.proj(x).unbind(-1)  # each (B, T)
        return decision, confidence


# ---------------------------------------------------------------------------------------------------
# Outputs


@dataclass
class SageModelOutput(ModelOutput):
    """Output of the forward stack.

    Args:
        last_hidden_state: (B, T, D) after the final LayerNorm.
        cache: the KV cache, when `use_cache`.
        hidden_states: embeddings + each layer's output, when `output_hidden_states`.
        attentions: per layer (B, nh, T, past + T) token-head weights, when `output_attentions`.
        group_norms: (B, T, L, G) each layer's head-group output norms (the attention summary), when
            `output_group_norms` (G = the head groups, then the concept heads if any).
        step_ids: (B, T) reasoning-step index of each token.
    """

    last_hidden_state: torch.Tensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    group_norms: torch.Tensor | None = None
    step_ids: torch.Tensor | None = None


@dataclass
class SageCausalLMOutput(ModelOutput):
    """Output of `SageForCausalLM`: the usual causal-LM fields plus the inverse-reasoning ones.

    Args:
        loss: next-token cross-entropy (L_reasoning, eq. 9) when `labels` are given.
        logits: (B, T, V) next-token logits.
        cache / hidden_states / attentions / group_norms / step_ids: as in `SageModelOutput`.
        inverse_hidden_states: (B, T, D) output of the inverse analysis stack.
        decision_logits: (B, T) meta-cognitive decision-point logits (sigmoid = decision score).
        confidence_logits: (B, T) meta-cognitive confidence logits (sigmoid = P(step correct)).
        reconstructed_logits: (B, T, V) the inverse stack's reconstruction of the forward distribution at the
            `reconstructed_positions` (B, T), made without reading them: the tokens of the step `hidden_step`
            names, for the consistency loss (eq. 11, `train.losses.consistency_sum`).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    group_norms: torch.Tensor | None = None
    step_ids: torch.Tensor | None = None
    inverse_hidden_states: torch.Tensor | None = None
    decision_logits: torch.Tensor | None = None
    confidence_logits: torch.Tensor | None = None
    reconstructed_logits: torch.Tensor | None = None
    reconstructed_positions: torch.Tensor | None = None


def step_ids_from_input_ids(input_ids: torch.Tensor, separator_ids: list[int]) -> torch.Tensor:
    """Reasoning-step index per token: the number of step separators up to and including it."""
    if not separator_ids:
        return torch.zeros_like(input_ids)
    is_separator = torch.isin(input_ids, torch.tensor(separator_ids, device=input_ids.device))
    return is_separator.long().cumsum(-1)


# ---------------------------------------------------------------------------------------------------
# Models


class SagePreTrainedModel(PreTrainedModel):
    config_class = SageConfig
    config: SageConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SageBlock"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, MultiscaleAttention) and module.num_concept_heads:
            init.normal_(module.concepts, mean=0.0, std=self.config.initializer_range)
        if isinstance(module, RotaryEmbedding):  # a buffer, not saved: from_pretrained builds it on meta
            init.copy_(module.inv_freq, module.frequencies())
        if isinstance(module, InverseAnalysisStack):
            init.normal_(module.hidden_position, mean=0.0, std=self.config.initializer_range)
        if isinstance(module, AdaptiveLayerNorm) and module.step_proj is not None:
            init.zeros_(module.step_proj.weight)  # start as a plain LayerNorm (eq. 14 with tanh(0) = 0)
            init.zeros_(module.step_proj.bias)

    def post_init(self) -> None:
        super().post_init()
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name

    def hook_points(self) -> dict[str, HookPoint]:
        """All named hook points, e.g. `model.layers.0.attn.hook_pattern`."""
        return {name: m for name, m in self.named_modules() if isinstance(m, HookPoint)}

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: list[tuple[str, Callable]]) -> Iterator[None]:
        """Adds forward hooks `(hook_name, fn(module, input, output))` for a block; always removed after it."""
        points = self.hook_points()
        handles = []
        try:
            for name, fn in fwd_hooks:
                if name not in points:
                    raise ValueError(f"unknown hook point {name!r}; see model.hook_points() for the names")
                handles.append(points[name].register_forward_hook(fn))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def run_with_cache(
        self, *args, names_filter: Callable[[str], bool] | None = None, **kwargs
    ) -> tuple[ModelOutput, dict[str, torch.Tensor]]:
        """Runs the model and returns (output, {hook name: activation}) for the hook points that fired."""
        activations: dict[str, torch.Tensor] = {}

        def save(name: str) -> Callable:
            def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
                activations[name] = output.detach()

            return hook

        names = [n for n in self.hook_points() if names_filter is None or names_filter(n)]
        with self.hooks([(n, save(n)) for n in names]):
            output = self(*args, **kwargs)
        return output, activations


class SageModel(SagePreTrainedModel):
    """The forward reasoning stack: embeddings, SAGE blocks, final LayerNorm."""

    def __init__(self, config: SageConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(SageBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        step_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        output_group_norms: bool = False,
        **kwargs,
    ) -> SageModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, D)
        B, T, _ = x.shape
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None and not (self.gradient_checkpointing and self.training):
            cache = DynamicCache()
        past = cache.get_seq_length() if cache is not None else 0
        if past + T > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence of {past + T} tokens is longer than the model's context "
                f"(max_position_embeddings={self.config.max_position_embeddings}); shorten the input"
            )
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=x.device)[None].expand(B, -1)
        step_ids = self._resolve_step_ids(input_ids, step_ids, past)
        attn_impl = self._attention_implementation(bool(output_attentions))
        mask = build_attention_mask(attention_mask, T, past + T, causal=True, materialize=attn_impl == "eager")
        rotary = self.rotary(position_ids, x.dtype)
        step_pos = step_ids[..., None].to(x.dtype) if step_ids is not None else None  # (B, T, 1)

        all_hidden = [x] if output_hidden_states else None
        all_attentions, group_norms = [], []
        for layer in self.layers:
            x, weights, norms = layer(x, rotary, mask, step_pos, cache, attn_impl, output_group_norms)
            group_norms.append(norms)
            if output_attentions:
                all_attentions.append(weights)
            if output_hidden_states:
                all_hidden.append(x)
        x = self.norm(x)
        if output_hidden_states:
            all_hidden[-1] = x
        return SageModelOutput(
            last_hidden_state=x,
            cache=cache if use_cache else None,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
            group_norms=torch.stack(group_norms, dim=2) if output_group_norms else None,  # (B, T, L, G)
            step_ids=step_ids,
        )

    def _resolve_step_ids(
        self, input_ids: torch.Tensor | None, step_ids: torch.Tensor | None, past: int
    ) -> torch.Tensor | None:
        if step_ids is not None or not self.config.use_adaptive_layernorm:
            return step_ids
        if input_ids is None:
            return None
        if past and self.config.step_separator_token_ids:
            raise ValueError(
                "step_ids are needed when decoding with a cache: the step index of new tokens depends on the "
                "whole prefix. model.generate() computes them; in a hand-written loop pass "
                "step_ids=step_ids_from_input_ids(full_ids, config.step_separator_token_ids)[:, -new_tokens:]"
            )
        return step_ids_from_input_ids(input_ids, self.config.step_separator_token_ids)

    def _attention_implementation(self, output_attentions: bool) -> str:
        impl = self.config._attn_implementation or "sdpa"
        if output_attentions and impl != "eager":
            warnings.warn(
                f"output_attentions=True needs eager attention; {impl!r} returns no weights, so this call falls "
                "back to eager. Load with attn_implementation='eager' to silence this warning.",
                stacklevel=3,
            )
            return "eager"
        return impl


class SageForCausalLM(SagePreTrainedModel, GenerationMixin):
    """SAGE-nano: the forward stack with an LM head, the inverse analysis stack and the meta-cognitive head."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    # Models saved before eq. 11 hid the reconstructed step lack it; it only serves that training loss.
    _keys_to_ignore_on_load_missing = [r"inverse\.hidden_position"]

    def __init__(self, config: SageConfig) -> None:
        super().__init__(config)
        self.model = SageModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.inverse = InverseAnalysisStack(config) if config.use_inverse_stack else None
        self.meta_head = MetaCognitiveHead(config) if config.use_meta_cognitive_head else None
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        step_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        run_inverse: bool = False,
        hidden_step: torch.LongTensor | None = None,
        output_group_norms: bool = False,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> SageCausalLMOutput:
        """Forward pass; `run_inverse=True` also runs the inverse stack and meta-cognitive head.

        The inverse stack is bidirectional over the whole chain, so it runs on a full sequence (training,
        analysis), not token by token during generation. `hidden_step` (B,), with `run_inverse`: the step of
        each sequence whose forward distribution the inverse stack reconstructs without reading that step's
        hidden states (`reconstructed_logits`), from the question and the other steps.
        """
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            step_ids=step_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            output_group_norms=output_group_norms or run_inverse,
        )
        hidden = out.last_hidden_state
        kept = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
        logits = self.lm_head(kept)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size)
        inverse = {}
        if run_inverse:
            hidden = None if hidden_step is None else self._positions_of_step(out.step_ids, input_ids, hidden_step)
            inverse = self._run_inverse(out, attention_mask, hidden)
        return SageCausalLMOutput(
            loss=loss,
            logits=logits,
            cache=out.cache,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            group_norms=out.group_norms,
            step_ids=out.step_ids,
            **inverse,
        )

    def _positions_of_step(
        self, step_ids: torch.Tensor | None, input_ids: torch.Tensor | None, step: torch.Tensor
    ) -> torch.Tensor:
        """(B, T) True at the tokens of each sequence's step `step[b]` (its separator included)."""
        if step_ids is None:
            if input_ids is None:
                raise ValueError("hidden_step needs input_ids or step_ids: the steps are found by their separators")
            step_ids = step_ids_from_input_ids(input_ids, self.config.step_separator_token_ids)
        return step_ids == step.to(step_ids.device)[:, None]

    def _run_inverse(
        self, out: SageModelOutput, attention_mask: torch.Tensor | None, hidden: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """The inverse stack over the chain and the meta head on its output; with `hidden` (B, T), also the
        reconstruction of the forward distribution at those positions from a pass that does not read them."""
        if out.cache is not None and out.cache.get_seq_length() > out.last_hidden_state.shape[1]:
            raise ValueError("run_inverse=True needs the whole chain in one call, not a cached continuation")
        states = out.last_hidden_state
        result: dict[str, torch.Tensor] = {}
        if self.inverse is not None:
            B, T, _ = states.shape
            positions = torch.arange(T, device=states.device)[None].expand(B, -1)
            step_pos = out.step_ids[..., None].to(states.dtype) if out.step_ids is not None else None
            inputs = [states, out.group_norms, positions, attention_mask, step_pos]
            hide = None
            if hidden is not None:  # both passes in one call: DDP and FSDP2 see the stack run once
                inputs = [x if x is None else torch.cat([x, x]) for x in inputs]
                hide = torch.cat([torch.zeros_like(hidden), hidden])
            states, group_norms, positions, mask, step_pos = inputs
            rotary = self.model.rotary(positions, states.dtype)
            impl = self.model._attention_implementation(False)
            analysed = self.inverse(states, group_norms, rotary, mask, step_pos, impl, hidden=hide)
            result["inverse_hidden_states"] = analysed[:B]
            if hidden is not None:
                result["reconstructed_logits"] = self.lm_head(analysed[B:])
                result["reconstructed_positions"] = hidden
        if self.meta_head is not None:
            result["decision_logits"], result["confidence_logits"] = self.meta_head(
                result.get("inverse_hidden_states", states)
            )
        return result

    @contextlib.contextmanager
    def concepts_computed_once(self) -> Iterator[None]:
        """Within the block, the concepts' keys and values are computed once: they do not depend on the input, and
        the weights must not change while it runs (decoding loops: `generate`, lookup decoding, rollouts)."""
        attentions = [m for m in self.modules() if isinstance(m, MultiscaleAttention) and m.num_concept_heads]
        try:
            for attention in attentions:
                attention._concept_kv_cache = attention._concept_keys_values()
            yield
        finally:
            for attention in attentions:
                attention._concept_kv_cache = None

    @torch.no_grad()
    def generate(self, *args, **kwargs):
        """`GenerationMixin.generate`, with the concepts' keys and values computed once per call."""
        with self.concepts_computed_once():
            return super().generate(*args, **kwargs)

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, **kwargs) -> dict:
        """As transformers does, plus the step index of the new tokens, computed over the whole prefix."""
        inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        new_ids = inputs.get("input_ids")
        if self.config.use_adaptive_layernorm and new_ids is not None:
            step_ids = step_ids_from_input_ids(input_ids, self.config.step_separator_token_ids)
            inputs["step_ids"] = step_ids[:, -new_ids.shape[1] :]
        return inputs


AutoConfig.register("sage_nano", SageConfig, exist_ok=True)
AutoModelForCausalLM.register(SageConfig, SageForCausalLM, exist_ok=True)
