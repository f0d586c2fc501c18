"""Traced generation for any Hugging Face causal LM: the forward module F of the paper (eq. 3).

`trace_generate` runs the model's own `generate()` (so it reuses the KV cache, runs at the model's own
attention implementation and yields exactly the tokens `generate` yields) with a hook that records, for
every generated token, its log-probability, entropy and top-k alternatives. One eager replay pass over
the finished sequence then reads a bounded attention summary (hidden states and full attention maps only
on request). The chain is then cut into reasoning steps.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache, DynamicCache

from .attention import attention_modules, eager_attention, head_groups
from .decoding import (
    context_length,
    decode_each,
    entropy,
    eos_ids,
    inputs_after_cache,
    plain_cache,
    prefix_decodings,
)
from .lookup_decoding import lookup_applies, lookup_decode
from .steps import StepSpan, segment_steps

AttentionRecord = Literal["none", "summary", "full"]


# ---------------------------------------------------------------------------------------------------
# The trace


@dataclass
class ReasoningTrace:
    """What the model generated for one prompt, token by token (T generated tokens, P prompt tokens).

    Attention rows belong to the forward pass that *produced* each token: row t is the attention of the
    position just before generated token t over the context then available (P + t positions). The last
    generated token is never fed back, so full maps and hidden states cover N = P + T - 1 positions.
    """

    prompt: str
    prompt_ids: torch.Tensor  # (P,)
    token_ids: torch.Tensor  # (T,)
    tokens: list[str]  # each generated token decoded on its own
    text: str  # the generated text (a final end-of-sequence token left out)
    token_char_ends: list[int]  # end offset of each token in `text`'s decoding
    logprobs: torch.Tensor  # (T,) log P(token | prefix)
    entropies: torch.Tensor  # (T,) entropy (nats) of the next-token distribution
    topk_ids: torch.Tensor  # (T, K)
    topk_logprobs: torch.Tensor  # (T, K)
    topk_tokens: list[list[str]]
    finish_reason: Literal["eos", "stop_string", "length"]
    head_groups: list[str]
    vocab_size: int
    attention: torch.Tensor | None = None  # (T, L, G, P + T - 1) mean over each head group, float16
    attention_maps: torch.Tensor | None = None  # (L, H, N, N), N = P + T - 1, on request
    hidden_states: torch.Tensor | None = None  # (L + 1, N, D), N = P + T - 1, on request
    steps: list[StepSpan] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def normalized_entropies(self) -> torch.Tensor:
        """(T,) entropy divided by its maximum, log(vocabulary size): 0 = certain, 1 = uniform."""
        return self.entropies / math.log(self.vocab_size)

    def step_stats(self) -> list[dict[str, float]]:
        """Per step: mean and lowest token probability, and mean normalised entropy of its tokens."""
        stats = []
        for step in self.steps:
            probs = self.logprobs[step.token_start : step.token_end].exp()
            entropy = self.normalized_entropies[step.token_start : step.token_end]
            stats.append(
                {"mean_prob": float(probs.mean()), "min_prob": float(probs.min()), "entropy": float(entropy.mean())}
            )
        return stats

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: text, steps and the per-token records (no attention or hidden states)."""
        return {
            "prompt": self.prompt,
            "text": self.text,
            "finish_reason": self.finish_reason,
            "steps": [{**vars(s), **stats} for s, stats in zip(self.steps, self.step_stats(), strict=True)],
            "tokens": [
                {
                    "id": int(tid),
                    "token": tok,
                    "logprob": float(lp),
                    "entropy": float(ent),
                    "normalized_entropy": float(ent) / math.log(self.vocab_size),
                    "top_k": [
                        {"id": int(i), "token": t, "logprob": float(v)} for i, t, v in zip(ids, toks, vals, strict=True)
                    ],
                }
                for tid, tok, lp, ent, ids, toks, vals in zip(
                    self.token_ids,
                    self.tokens,
                    self.logprobs,
                    self.entropies,
                    self.topk_ids,
                    self.topk_tokens,
                    self.topk_logprobs,
                    strict=True,
                )
            ],
        }


# ---------------------------------------------------------------------------------------------------
# Recording


class _Recorder:
    """A forward hook that turns each decoding step's logits into per-token records.

    Each step only keeps a reference to the step's last-position logits (no tensor op: a per-step
    log-softmax, entropy and top-k is a noticeable share of a small model's generation); they are
    reduced to log-prob, entropy and top-k a chunk of steps at a time, in one batched op each, so what is
    held at once is bounded by `chunk_bytes`, never vocabulary × steps. A step's chosen token is the
    input of the next call, read by a pre-hook on the input embeddings (or, for the last step, `finish`'s
    argument).
    Attention and hidden states are not recorded here but by one replay pass afterwards (`_replay`), so
    generation itself runs at the model's own attention implementation (sdpa), as plain `generate` does.
    """

    def __init__(self, top_k: int, chunk_bytes: int = 2 * 2**20):
        self.top_k = top_k
        self.chunk_bytes = chunk_bytes
        self.vocab_size = 0
        self.pending_logits: list[torch.Tensor] = []  # per unreduced step (B, 1, V)
        self.pending_chosen: list[torch.Tensor] = []  # chosen tokens (B,) of the first pending steps
        self.entropies: list[torch.Tensor] = []  # per chunk (n, B)
        self.topk_values: list[torch.Tensor] = []  # per chunk (n, B, K)
        self.topk_ids: list[torch.Tensor] = []
        self.chosen_logprobs: list[torch.Tensor] = []  # per chunk (n, B)

    def on_model_input(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Pre-hook of the input embeddings: the token fed now is the one chosen at the previous step."""
        if len(self.pending_chosen) < len(self.pending_logits):
            ids = args[0] if args else kwargs.get("input", kwargs.get("input_ids"))
            if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.long, torch.int):
                raise RuntimeError("traced generation cannot read the token ids the input embeddings receive")
            self.pending_chosen.append(ids[:, -1])

    def on_model_output(self, module: nn.Module, args: tuple, output: Any) -> None:
        logits = output.logits
        # A model that ignores logits_to_keep returns every position's logits: keep a copy of the last only.
        self.pending_logits.append(logits[:, -1:].clone() if logits.shape[1] > 1 else logits)
        batch, vocab = logits.shape[0], logits.shape[-1]
        if len(self.pending_chosen) * batch * vocab * 4 >= self.chunk_bytes:
            self._reduce()

    def _reduce(self) -> None:
        """Reduces the pending steps whose chosen token is known (all but the latest until `finish`)."""
        n = len(self.pending_chosen)
        if n == 0:
            return
        # Few large temporaries (each is a fresh allocation that page-faults): the logits are turned into
        # log-probs in place, after top-k and the chosen token's logit are read from them.
        logits = torch.cat(self.pending_logits[:n], dim=1).float()  # (B, n, V)
        normalizer = logits.logsumexp(-1, keepdim=True)  # (B, n, 1)
        chosen = torch.stack(self.pending_chosen, dim=1)[..., None]  # (B, n, 1)
        self.chosen_logprobs.append((logits.gather(-1, chosen) - normalizer)[..., 0].T)
        values, ids = logits.topk(self.top_k, dim=-1)
        self.topk_values.append((values - normalizer).transpose(0, 1))
        self.topk_ids.append(ids.transpose(0, 1))
        logprobs = logits.sub_(normalizer)
        self.entropies.append(entropy(logprobs, overwrite=True).T)
        self.vocab_size = logprobs.shape[-1]
        del self.pending_logits[:n]
        self.pending_chosen.clear()

    def record(self, logits: torch.Tensor, chosen: torch.Tensor) -> None:
        """Steps decoded outside `generate` (lookup decoding: several tokens per pass, no hooks): their logits
        (B, n, V) and the tokens chosen from them (B, n)."""
        for i in range(logits.shape[1]):
            self.pending_logits.append(logits[:, i : i + 1])
            self.pending_chosen.append(chosen[:, i])
        if len(self.pending_chosen) * logits.shape[0] * logits.shape[-1] * 4 >= self.chunk_bytes:
            self._reduce()

    def finish(self, last_tokens: torch.Tensor | None) -> None:
        """Reduces what is pending, the last step with the token chosen there (no forward pass follows it);
        `last_tokens` None: every step's token is known already (`record`)."""
        if last_tokens is not None:
            if len(self.pending_chosen) + 1 != len(self.pending_logits):
                # e.g. chunked prefill (two forward passes before the first token) or embeddings that are not called
                raise RuntimeError(
                    f"traced generation saw {len(self.pending_logits)} model outputs for {len(self.pending_chosen)} "
                    "fed tokens: it needs one forward pass, through the input embeddings, per generated token"
                )
            self.pending_chosen.append(last_tokens)
        self._reduce()
        for name in ("entropies", "topk_values", "topk_ids", "chosen_logprobs"):
            setattr(self, name, torch.cat(getattr(self, name)))  # (T, B, ...)


@dataclass
class _Replayed:
    summary: torch.Tensor | None  # (T, L, G, N) float16
    maps: torch.Tensor | None  # (L, H, N, N)
    hidden_states: torch.Tensor | None  # (L + 1, N, D)


@torch.no_grad()
def _replay(
    model: PreTrainedModel,
    ids: torch.Tensor,
    num_new: int,
    groups: dict[str, int],
    attention: AttentionRecord,
    hidden: bool,
    cache: Cache | None = None,
) -> _Replayed:
    """Attention and hidden states of one generated sequence, from a single forward pass over its N = P + T − 1
    positions (the last generated token is never an input).

    One causal pass yields exactly the rows the decoding steps computed one at a time (row P − 1 + t is the
    position that predicted generated token t), so generation runs at full speed and each layer's map is
    reduced to head-group rows as soon as it exists: only one layer's (H, N, N) is alive at a time.
    With generation's KV cache (`cache`; for summary rows without hidden states only, as `trace_generate` passes
    it), the pass covers only the T positions that predicted a generated token and reads the earlier ones' keys and
    values from the cache: the prompt is not recomputed.
    """
    sizes = torch.tensor(list(groups.values()))
    group_means = torch.repeat_interleave(torch.eye(len(sizes)) / sizes[:, None], sizes, dim=1)  # (G, H)
    rows: list[torch.Tensor] = []
    maps: list[torch.Tensor] = []

    def on_attention(index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, output: tuple) -> None:
            weights = output[index]  # (1, H, rows, N): N rows, or T with the cache
            if weights is None:
                raise RuntimeError("attention weights are empty: the model is not running eager attention")
            predicting = weights[0, :, -num_new:].float()  # (H, T, N): the rows that predicted generated tokens
            rows.append(torch.einsum("gh,htn->tgn", group_means.to(predicting.device), predicting))
            if attention == "full":
                maps.append(weights[0].detach().float().cpu())

        return hook

    handles = []
    if attention != "none":
        handles = [m.register_forward_hook(on_attention(i)) for _, m, i in attention_modules(model)]
    inputs = _cached_inputs(model, ids, num_new, cache)
    if inputs is None:
        inputs = {"input_ids": ids[None].to(model.device), "use_cache": False, "output_hidden_states": hidden}
    try:
        with eager_attention(model, attention != "none") as asking:
            out = model(**inputs, **asking, logits_to_keep=1)
    finally:
        for handle in handles:
            handle.remove()
    return _Replayed(
        summary=torch.stack(rows, dim=1).to(torch.float16).cpu() if rows else None,
        maps=torch.stack(maps) if maps else None,
        hidden_states=torch.stack(out.hidden_states)[:, 0].float().cpu() if hidden else None,
    )


def _cached_inputs(model: PreTrainedModel, ids: torch.Tensor, num_new: int, cache: Cache | None) -> dict | None:
    """Model inputs for the last `num_new` positions of `ids` with `cache` holding all earlier ones; None when the
    cache cannot serve: absent, not exactly the keys and values of `ids`, or not plain (`plain_cache`)."""
    past = len(ids) - num_new
    if cache is None or past < 1 or cache.get_seq_length() != len(ids) or not plain_cache(cache):
        return None
    cache.crop(past - len(ids))  # keep the keys and values of positions [0, past)
    return inputs_after_cache(model, ids[None].to(model.device), cache)


@contextlib.contextmanager
def _hooks(recorder: _Recorder, model: PreTrainedModel) -> Iterator[None]:
    # No kwargs hook on the whole model: that cost ~25 µs a step here (its kwargs hold the cache), these ~2 µs.
    handles = [
        model.get_input_embeddings().register_forward_pre_hook(recorder.on_model_input, with_kwargs=True),
        model.register_forward_hook(recorder.on_model_output),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------------------------------------------
# The entry point


def render_prompt(tokenizer: PreTrainedTokenizerBase, question: str, chat: bool | None) -> str:
    """The prompt as the model sees it: through the chat template when asked (or, with None, when present)."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError("the prompt is empty: pass a question or text to continue")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat and not has_template:
        raise ValueError("chat=True but this tokenizer has no chat template; pass chat=False")
    if chat or (chat is None and has_template):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    return question


@torch.no_grad()
def trace_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: str | list[str],
    max_new_tokens: int = 128,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop_strings: list[str] | None = None,
    top_k: int = 5,
    attention: AttentionRecord = "summary",
    hidden_states: bool = False,
    step_strategy: str = "auto",
    chat: bool | None = None,
    forced: list[int] | None = None,
    lookup: bool = False,
) -> ReasoningTrace | list[ReasoningTrace]:
    """Generates from one prompt or a batch and records every generated token.

    Args:
        model: any Hugging Face causal LM (SAGE or Llama, Qwen2, GPT-2, Mistral, ...).
        tokenizer: its tokenizer.
        prompts: one prompt (returns one trace) or a list (returns a list, generated as one batch).
        max_new_tokens: bound on generated tokens (cut to what the context leaves, with a warning).
        do_sample / temperature / top_p / seed: sampling; greedy by default.
        stop_strings: generation of a sequence stops once its text contains one of these.
        top_k: alternatives kept per token.
        attention: "summary" (per layer × head group over the context), "full" (also L×H×N×N maps) or "none".
        hidden_states: also keep every layer's hidden state at every position.
        step_strategy: "auto", "tokens" (SAGE's `<|step|>`), "lines", "sentences" or "markers" ("Step k:").
        chat: wrap the prompt in the tokenizer's chat template (None: when the tokenizer has one).
        forced: token ids to feed instead of choosing (one prompt only): the trace of a given chain, with
            the model's own probabilities, entropies, alternatives and attention at every token.
        lookup: greedy decoding by prompt lookup (`sagenano.lookup_decoding`): `generate`'s tokens in fewer forward
            passes (docs/measurements.md). Needs one prompt, greedy decoding, no `forced` or `stop_strings`, and a
            model where `lookup_applies`.
    """
    single = isinstance(prompts, str)
    rendered = [render_prompt(tokenizer, p, chat) for p in ([prompts] if single else prompts)]
    if not rendered:
        raise ValueError("prompts is an empty list")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if attention not in ("none", "summary", "full"):
        raise ValueError(f"attention must be 'none', 'summary' or 'full', got {attention!r}")
    inputs, pad_id = _tokenize(tokenizer, rendered, model)
    processors = []
    if forced is not None:
        if len(rendered) != 1 or not forced or do_sample:
            raise ValueError("forced needs one prompt, a non-empty list of token ids and greedy decoding")
        max_new_tokens = len(forced)
        processors.append(_ForceTokens(forced, inputs["input_ids"].shape[1]))
    max_new_tokens = _fit_to_context(model, inputs["input_ids"].shape[1], max_new_tokens)

    groups = head_groups(model)
    recorder = _Recorder(min(top_k, model.config.get_text_config().vocab_size))
    if seed is not None:
        torch.manual_seed(seed)
    sampling = dict(temperature=temperature, top_p=top_p, top_k=0) if do_sample else {}
    # One prompt (no padding): generation's KV cache lets the replay pass skip the prompt.
    keep_cache = len(rendered) == 1 and attention == "summary" and not hidden_states
    if lookup:
        if len(rendered) != 1 or do_sample or forced is not None or stop_strings or not lookup_applies(model):
            raise ValueError(
                "lookup needs one prompt, greedy decoding, no forced tokens or stop strings, and a model where "
                "lookup_applies (a plain cache, no logits processors in its generation config)"
            )
        sequences, cache = _lookup_generate(model, inputs["input_ids"][0].tolist(), max_new_tokens, recorder)
        return _build_trace(
            recorder,
            tokenizer,
            model,
            inputs,
            sequences,
            0,
            rendered[0],
            groups,
            None,
            step_strategy,
            attention,
            hidden_states,
            cache if keep_cache else None,
        )
    with _hooks(recorder, model):
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            pad_token_id=pad_id,
            stop_strings=stop_strings,
            tokenizer=tokenizer if stop_strings else None,
            return_dict_in_generate=keep_cache,
            **sampling,
            **({"logits_processor": LogitsProcessorList(processors)} if processors else {}),
        )
    sequences, cache = (out.sequences, out.cache) if keep_cache else (out, None)
    recorder.finish(sequences[:, -1])
    traces = [
        _build_trace(
            recorder,
            tokenizer,
            model,
            inputs,
            sequences,
            b,
            rendered[b],
            groups,
            stop_strings,
            step_strategy,
            attention,
            hidden_states,
            cache,
        )
        for b in range(len(rendered))
    ]
    return traces[0] if single else traces


def _lookup_generate(
    model: PreTrainedModel, prompt: list[int], max_new_tokens: int, recorder: _Recorder
) -> tuple[torch.Tensor, Cache]:
    """(1, P + T) greedy sequence by lookup decoding, each step recorded; and the keys and values of all but its
    last token."""

    def on_chosen(tokens: list[int], logits: torch.Tensor) -> None:
        recorder.record(logits[None], torch.tensor([tokens], device=logits.device))

    cache = DynamicCache(config=model.config)
    new = lookup_decode(model, prompt, max_new_tokens, eos_ids(model), on_chosen, cache=cache)
    recorder.finish(None)
    surplus = cache.get_seq_length() - (len(prompt) + len(new) - 1)  # rejected drafts after the last fed token
    if surplus:
        cache.crop(-surplus)
    return torch.tensor([prompt + new]), cache


class _ForceTokens(LogitsProcessor):
    """Makes generation pick the given tokens in turn. The recorder reads the model's logits before any
    processor runs, so the trace still holds the model's own distribution at every forced token."""

    def __init__(self, ids: list[int], prompt_len: int) -> None:
        self.ids, self.prompt_len = ids, prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_len
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.ids[min(step, len(self.ids) - 1)]] = 0.0
        return forced


def _tokenize(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], model: PreTrainedModel
) -> tuple[dict[str, torch.Tensor], int | None]:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only batches pad on the left so every row ends at "now"
    try:
        if tokenizer.pad_token is None and len(prompts) > 1:
            tokenizer.pad_token = tokenizer.eos_token
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=not _templated(tokenizer))
    finally:
        tokenizer.padding_side = side
    if inputs["input_ids"].shape[1] == 0 or (inputs["attention_mask"].sum(1) == 0).any():
        raise ValueError("a prompt encodes to no tokens")
    inputs = {k: v.to(model.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    return inputs, pad_id


def _templated(tokenizer: PreTrainedTokenizerBase) -> bool:
    # A chat template already writes the special tokens it wants.
    return bool(getattr(tokenizer, "chat_template", None))


def _fit_to_context(model: PreTrainedModel, prompt_len: int, max_new_tokens: int) -> int:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    context = context_length(model)
    if context is None:
        return max_new_tokens
    if prompt_len >= context:
        raise ValueError(f"the prompt is {prompt_len} tokens but the model's context is {context}: shorten the prompt")
    if prompt_len + max_new_tokens > context:
        warnings.warn(
            f"max_new_tokens={max_new_tokens} does not fit the context ({context}) after a {prompt_len}-token "
            f"prompt; generating at most {context - prompt_len}",
            stacklevel=3,
        )
        return context - prompt_len
    return max_new_tokens


def _generated_length(prefix_texts: list[str], eos_at: int | None, stop_strings: list[str] | None) -> tuple[int, str]:
    """How many of a row's generated tokens are real (the rest is batch padding), and why it ended.
    `prefix_texts[i]` is the decoding of the first i + 1 tokens, up to the first end-of-sequence token (`eos_at`)."""
    before_eos = len(prefix_texts) if eos_at is None else eos_at
    for i in range(before_eos if stop_strings else 0):
        if any(s in prefix_texts[i] for s in stop_strings):
            return i + 1, "stop_string"
    return (len(prefix_texts), "length") if eos_at is None else (eos_at + 1, "eos")


def _build_trace(
    recorder: _Recorder,
    tokenizer: PreTrainedTokenizerBase,
    model: PreTrainedModel,
    inputs: dict[str, torch.Tensor],
    sequences: torch.Tensor,
    b: int,
    prompt: str,
    groups: dict[str, int],
    stop_strings: list[str] | None,
    step_strategy: str,
    attention: AttentionRecord,
    hidden_states: bool,
    cache: Cache | None,
) -> ReasoningTrace:
    padded_len = inputs["input_ids"].shape[1]
    pad = int((inputs["attention_mask"][b] == 0).sum())  # left padding of this row
    prompt_ids = inputs["input_ids"][b, pad:].cpu()
    new_ids = sequences[b, padded_len:].tolist()
    eos = eos_ids(model)
    eos_at = next((i for i, token in enumerate(new_ids) if token in eos), None)
    # Decoded up to the end of sequence only: a batch row that ended early is padding after it.
    prefix_texts = prefix_decodings(tokenizer, new_ids if eos_at is None else new_ids[: eos_at + 1])
    length, finish_reason = _generated_length(prefix_texts, eos_at, stop_strings)
    token_ids = torch.tensor(new_ids[:length], dtype=torch.long)
    text_ids = token_ids[:-1] if finish_reason == "eos" else token_ids
    char_ends = [len(text) for text in prefix_texts[:length]]
    text = tokenizer.decode(text_ids)
    topk_ids = recorder.topk_ids[:length, b].cpu()

    trace = ReasoningTrace(
        prompt=prompt,
        prompt_ids=prompt_ids,
        token_ids=token_ids,
        tokens=decode_each(tokenizer, token_ids),
        text=text,
        token_char_ends=char_ends,
        logprobs=recorder.chosen_logprobs[:length, b].cpu(),
        entropies=recorder.entropies[:length, b].cpu(),
        topk_ids=topk_ids,
        topk_logprobs=recorder.topk_values[:length, b].cpu(),
        topk_tokens=decode_each(tokenizer, topk_ids),
        finish_reason=finish_reason,
        head_groups=list(groups),
        vocab_size=recorder.vocab_size,
    )
    if attention != "none" or hidden_states:
        ids = torch.cat([prompt_ids, token_ids[:-1]])
        replayed = _replay(model, ids, length, groups, attention, hidden_states, cache)
        trace.attention, trace.attention_maps = replayed.summary, replayed.maps
        trace.hidden_states = replayed.hidden_states
    trace.steps = segment_steps(text, char_ends[: len(text_ids)], step_strategy)
    return trace
