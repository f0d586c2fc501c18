"""SageConfig: the SAGE-nano architecture's hyper-parameters, and its named sizes (pico ... medium)."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig

from .tokenizer import SPECIAL_TOKEN_IDS

# The paper's three token-head groups (§S1.1), in the order their heads sit in the attention layer.
DEFAULT_HEAD_GROUPS = {"reasoning": 16, "memory": 8, "meta_cognitive": 8}
# The reasoning FFN's gated sub-networks (eq. 13 names logic + memory, §S1.1 logic + numerical + temporal).
DEFAULT_FFN_EXPERTS = ("logic", "numerical", "temporal", "memory")
# The token a SAGE sequence begins with. SAGE's tokenizer has no BOS token and adds none: every sequence, in training
# and in the prompt (`data.format.prompt_text`), begins with `<|question|>`. Tools read `config.bos_token_id` (inseq
# makes a token of it when it loads a model; transformers v5 configs have the field only where the model declares it).
BOS_TOKEN_ID = SPECIAL_TOKEN_IDS["question"]
# Every component the ablations switch off; `SageConfig(..., use_X=False)` builds the model without it.
ABLATION_SWITCHES = (
    "use_concept_heads",
    "use_reasoning_ffn",
    "use_adaptive_layernorm",
    "use_inverse_stack",
    "use_meta_cognitive_head",
    "use_attention_tracking",
)


class SageConfig(PreTrainedConfig):
    """Configuration of a SAGE-nano model (`model_type="sage_nano"`).

    Args:
        vocab_size: size of the token vocabulary.
        hidden_size: width of the residual stream; must equal `sum(head_groups.values()) * head_dim`.
        num_hidden_layers: depth of the forward reasoning stack.
        num_inverse_layers: depth of the inverse analysis stack (bidirectional over the chain).
        head_groups: token-head count per named group, e.g. reasoning / memory / meta_cognitive, in the
            order the heads sit in each layer (saved as `head_group_names` + `head_group_sizes`).
        head_dim: width of one attention head (token and concept heads alike).
        num_concept_heads: heads that attend over learnable concept embeddings (eq. 12).
        num_concepts: how many learnable concept embeddings each layer's concept heads see.
        ffn_experts: names of the reasoning FFN's gated sub-networks (eq. 13); their count is their number.
        expert_intermediate_size: hidden width of each sub-network (a SwiGLU MLP).
        intermediate_size: hidden width of the plain SwiGLU MLP used when the reasoning FFN is off,
            and in the inverse stack.
        adaptive_ln_alpha: α of the adaptive LayerNorm (eq. 14).
        step_separator_token_ids: tokens that open a new reasoning step; the step index of a token is
            the number of separators up to and including it.
        max_position_embeddings: the context length.
        rope_theta: base of the rotary position embedding.
        layer_norm_eps: epsilon of every LayerNorm.
        initializer_range: std of the normal initialisation of linear and embedding weights.
        use_concept_heads / use_reasoning_ffn / use_adaptive_layernorm / use_inverse_stack /
        use_meta_cognitive_head / use_attention_tracking: ablation switches; each off builds the model without
            that part (attention tracking: the inverse stack's input of the forward pass's attention summary).
        bos_token_id: the token every sequence begins with, `<|question|>` (`BOS_TOKEN_ID`); a config.json written
            before it was a field reads it as that.
        eos_token_id / pad_token_id: the tokenizer's end-of-sequence and padding tokens (None: not set).
    """

    model_type = "sage_nano"
    keys_to_ignore_at_inference = ["cache"]

    def __init__(
        self,
        vocab_size: int = 4096,
        hidden_size: int = 192,
        num_hidden_layers: int = 4,
        num_inverse_layers: int = 2,
        head_groups: dict[str, int] | None = None,
        head_group_names: list[str] | None = None,
        head_group_sizes: list[int] | None = None,
        head_dim: int = 32,
        num_concept_heads: int = 2,
        num_concepts: int = 16,
        ffn_experts: list[str] | tuple[str, ...] = DEFAULT_FFN_EXPERTS,
        expert_intermediate_size: int = 128,
        intermediate_size: int = 512,
        adaptive_ln_alpha: float = 0.1,
        step_separator_token_ids: list[int] | None = None,
        max_position_embeddings: int = 1024,
        rope_theta: float = 10000.0,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        use_concept_heads: bool = True,
        use_reasoning_ffn: bool = True,
        use_adaptive_layernorm: bool = True,
        use_inverse_stack: bool = True,
        use_meta_cognitive_head: bool = True,
        use_attention_tracking: bool = True,
        use_cache: bool = True,
        tie_word_embeddings: bool = True,
        bos_token_id: int | None = BOS_TOKEN_ID,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_inverse_layers = num_inverse_layers
        if head_groups is None and head_group_names is not None:
            head_groups = dict(zip(head_group_names, head_group_sizes or [], strict=True))
        head_groups = dict(head_groups or {"reasoning": 2, "memory": 2, "meta_cognitive": 2})
        # Stored as two lists: JSON sorts dict keys on save, and the order decides which heads form a group.
        self.head_group_names = list(head_groups)
        self.head_group_sizes = [int(n) for n in head_groups.values()]
        self.head_dim = head_dim
        self.num_concept_heads = num_concept_heads
        self.num_concepts = num_concepts
        self.ffn_experts = list(ffn_experts)
        self.expert_intermediate_size = expert_intermediate_size
        self.intermediate_size = intermediate_size
        self.adaptive_ln_alpha = adaptive_ln_alpha
        self.step_separator_token_ids = list(step_separator_token_ids or [])
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.use_concept_heads = use_concept_heads
        self.use_reasoning_ffn = use_reasoning_ffn
        self.use_adaptive_layernorm = use_adaptive_layernorm
        self.use_inverse_stack = use_inverse_stack
        self.use_meta_cognitive_head = use_meta_cognitive_head
        self.use_attention_tracking = use_attention_tracking
        self.use_cache = use_cache
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        self._validate_sizes()

    @property
    def head_groups(self) -> dict[str, int]:
        """Token-head count per named group, in the order the heads sit in each attention layer."""
        return dict(zip(self.head_group_names, self.head_group_sizes, strict=True))

    @property
    def num_attention_heads(self) -> int:
        """Token heads over all groups (concept heads not counted), as transformers expects."""
        return sum(self.head_groups.values())

    @property
    def num_key_value_heads(self) -> int:
        return self.num_attention_heads

    @property
    def active_concept_heads(self) -> int:
        return self.num_concept_heads if self.use_concept_heads else 0

    def _validate_sizes(self) -> None:
        if any(n < 0 for n in self.head_groups.values()) or self.num_attention_heads == 0:
            raise ValueError(f"head_groups must hold non-negative counts with a positive sum, got {self.head_groups}")
        if self.num_attention_heads * self.head_dim != self.hidden_size:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must equal token heads ({self.num_attention_heads}) × head_dim "
                f"({self.head_dim}) = {self.num_attention_heads * self.head_dim}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary positions, got {self.head_dim}")
        if self.use_reasoning_ffn and not self.ffn_experts:
            raise ValueError("use_reasoning_ffn=True needs at least one name in ffn_experts")

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> SageConfig:
        """Builds a named preset (see `PRESETS`), with any field overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f"unknown SAGE preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


# Sizes as plain dicts (litgpt style). `nano` is the paper's model: 24 forward + 6 inverse layers,
# 32 heads × 128 split 16 / 8 / 8; `medium` is the §S6.1 scaling preset (≈12 B). The parameter counts
# are checked by tests on the meta device, not typed here.
PRESETS: dict[str, dict[str, Any]] = {
    "pico": dict(
        vocab_size=4096,
        hidden_size=192,
        num_hidden_layers=4,
        num_inverse_layers=2,
        head_dim=32,
        head_groups={"reasoning": 2, "memory": 2, "meta_cognitive": 2},
        num_concept_heads=2,
        num_concepts=16,
        expert_intermediate_size=128,
        intermediate_size=512,
        max_position_embeddings=1024,
    ),
    "micro": dict(
        vocab_size=8192,
        hidden_size=384,
        num_hidden_layers=6,
        num_inverse_layers=2,
        head_dim=32,
        head_groups={"reasoning": 6, "memory": 3, "meta_cognitive": 3},
        num_concept_heads=2,
        num_concepts=32,
        expert_intermediate_size=256,
        intermediate_size=1024,
        max_position_embeddings=1024,
    ),
    "small": dict(
        vocab_size=32000,
        hidden_size=768,
        num_hidden_layers=12,
        num_inverse_layers=4,
        head_dim=64,
        head_groups={"reasoning": 6, "memory": 3, "meta_cognitive": 3},
        num_concept_heads=4,
        num_concepts=64,
        expert_intermediate_size=512,
        intermediate_size=2048,
        max_position_embeddings=2048,
    ),
    "nano": dict(
        vocab_size=32000,
        hidden_size=4096,
        num_hidden_layers=24,
        num_inverse_layers=6,
        head_dim=128,
        head_groups=dict(DEFAULT_HEAD_GROUPS),
        num_concept_heads=4,
        num_concepts=64,
        expert_intermediate_size=1024,
        intermediate_size=2816,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    ),
    "medium": dict(
        vocab_size=32000,
        hidden_size=6144,
        num_hidden_layers=32,
        num_inverse_layers=8,
        head_dim=128,
        head_groups={"reasoning": 24, "memory": 12, "meta_cognitive": 12},
        num_concept_heads=6,
        num_concepts=128,
        expert_intermediate_size=1792,
        intermediate_size=4096,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    ),
}
