"""Teacher-forced measurements of a chain: token log-probabilities, step losses, gradients, ablations.

The chain is the prompt ids followed by the generated ids. One forward pass over `inputs` (the whole
sequence but its last token) scores every generated token: generated token t is predicted at position
P - 1 + t. Every function here works for SAGE models and for any Hugging Face causal LM.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import Cache

from ..decoding import Chain, consecutive_batches, entropy, full_cache, is_sage

ROWS_PER_PASS = 16  # bounds the memory of batched passes (logits are rows × length × vocabulary)


@dataclass
class Scores:
    """What one teacher-forced pass measured for every generated token."""

    logprobs: torch.Tensor  # (T,) log P(token t | prefix)
    entropies: torch.Tensor  # (T,) normalised entropy 0..1
    calibrated_logprobs: torch.Tensor  # (T,) log P(token t | prefix) at the token temperature (1: not calibrated)
    top_ids: torch.Tensor  # (T, k) the k most likely tokens at each position, most likely first
    top_logprobs: torch.Tensor  # (T, k) their log-probabilities at the token temperature
    top_raw_logprobs: torch.Tensor  # (T, k) their raw log-probabilities
    step_logprobs: torch.Tensor | None  # (T,) log P(token t | prefix) at the step temperature (None: not asked)
    answer_logits: torch.Tensor | None  # (A, V) logits at the answer tokens, for calibration
    meta_decision: torch.Tensor | None  # (N,) SAGE meta-cognitive decision probability per position
    meta_confidence: torch.Tensor | None  # (N,) SAGE meta-cognitive P(correct) per position
    cache: Cache | None = None  # the keys and values of the chain's inputs, when asked for (`keep_cache`)
    temperature: float | None = None  # the token temperature the calibrated numbers were read at (None: raw)

    @property
    def calibrated(self) -> bool:
        return self.temperature is not None


def _forward(model: PreTrainedModel, rows: torch.Tensor, chain: Chain, **kwargs):
    """A forward pass whose logits cover only the positions that predict generated tokens (the last T):
    the LM head over the prompt would cost as much again and is never read."""
    kwargs = {"use_cache": False, **kwargs}
    return model(input_ids=rows.to(model.device), logits_to_keep=len(chain.token_ids), **kwargs)


@torch.no_grad()
def score_chain(
    model: PreTrainedModel,
    chain: Chain,
    answer_tokens: list[int],
    keep_cache: bool = False,
    temperature: float | None = None,
    top_k: int = 2,
    step_temperature: float | None = None,
) -> Scores:
    """Scores every generated token of the chain in one forward pass that reads no earlier cache. `keep_cache`: also
    return the keys and values it computed (what comes after the chain can start from them). `temperature`: the
    calibration's token temperature, at which the calibrated log-probabilities and the `top_k` tokens are read (None: at
    temperature 1, not calibrated). `step_temperature`: also read each token's log-probability at the steps' calibration
    temperature (what a step's calibrated confidence is made of)."""
    extra = {"run_inverse": True} if is_sage(model) else {}
    if keep_cache:
        # Every position's keys and values (sliding-window layers too), so rollouts can cut it to any branch prefix.
        cache = full_cache(model)
        extra |= {"use_cache": True, "cache": DynamicCache(config=model.config) if cache is None else cache}
    out = _forward(model, chain.inputs[None], chain, **extra)
    logits = out.logits[0].float()  # (T, V): row t predicts generated token t
    logp = logits.log_softmax(-1)
    normalized_entropy = entropy(logp) / torch.log(torch.tensor(float(logp.shape[-1])))
    chosen = logp.gather(1, chain.token_ids[:, None].to(logp.device))[:, 0]
    calibrated = logp if temperature is None else (logits / temperature).log_softmax(-1)
    top = calibrated.topk(min(top_k, logp.shape[-1]), dim=-1)
    meta_decision = meta_confidence = None
    if getattr(out, "decision_logits", None) is not None:
        meta_decision = out.decision_logits[0].float().sigmoid().cpu()
        meta_confidence = out.confidence_logits[0].float().sigmoid().cpu()
    answer_logits = logits[answer_tokens].cpu() if answer_tokens else None
    return Scores(
        logprobs=chosen.cpu(),
        entropies=normalized_entropy.cpu(),
        calibrated_logprobs=calibrated.gather(1, chain.token_ids[:, None].to(logp.device))[:, 0].cpu(),
        top_ids=top.indices.cpu(),
        top_logprobs=top.values.cpu(),
        top_raw_logprobs=logp.gather(1, top.indices).cpu(),
        step_logprobs=None
        if step_temperature is None
        else (logits / step_temperature)
        .log_softmax(-1)
        .gather(1, chain.token_ids[:, None].to(logp.device))[:, 0]
        .cpu(),
        answer_logits=answer_logits,
        meta_decision=meta_decision,
        meta_confidence=meta_confidence,
        cache=extra.get("cache"),
        temperature=temperature,
    )


def step_inputs(chain: Chain, step: range) -> torch.Tensor:
    """The inputs a step's loss needs: up to the position that predicts its last token (causality makes
    everything after it irrelevant, so passes over a step stop there)."""
    return chain.inputs[: chain.prompt_len - 1 + step.stop]


def _step_logp(logits: torch.Tensor, chain: Chain, step: range) -> torch.Tensor:
    """(R,) log-probability of the step's tokens, from logits over exactly the step's predicting positions."""
    targets = chain.token_ids[list(step)].to(logits.device)
    logp = logits.float().log_softmax(-1)
    return logp.gather(2, targets[None, :, None].expand(len(logp), -1, 1))[..., 0].sum(1)


@torch.no_grad()
def step_losses(model: PreTrainedModel, rows: torch.Tensor, chain: Chain, step: range) -> torch.Tensor:
    """(R,) negative log-likelihood of one step's tokens for each row of (possibly ablated) step inputs.

    Whole rows: feeding each row from its first masked position (the earlier positions' keys and values taken from
    the unablated chain's pass) saves little, as most rows mask a span of the question (docs/measurements.md)."""
    result = []
    for start in range(0, len(rows), ROWS_PER_PASS):
        batch = rows[start : start + ROWS_PER_PASS].to(model.device)
        logits = model(input_ids=batch, use_cache=False, logits_to_keep=len(step)).logits
        result.append(-_step_logp(logits, chain, step).cpu())
    return torch.cat(result)


@torch.no_grad()
def masked_step_losses(
    model: PreTrainedModel,
    chain: Chain,
    requests: list[tuple[list[int], list[range]]],
    replacement: int,
    logits_mb: float = 256.0,
) -> list[list[float]]:
    """For each request (positions to mask, steps): the negative log-likelihood of each of those steps' tokens with
    the positions replaced by `replacement`. One row per request serves all its steps: it is fed up to its last
    step's tokens (causality makes later positions irrelevant), rows of similar length go together, and logits
    cover the batch's steps only, from its earliest: at most `ROWS_PER_PASS` rows, and as many as keep those logits
    (and their float32 temporaries) within `logits_mb`."""
    order = sorted(range(len(requests)), key=lambda i: max(s.stop for s in requests[i][1]))
    span = [(min(s.start for s in requests[i][1]), max(s.stop for s in requests[i][1])) for i in range(len(requests))]
    row_bytes = 12 * model.config.get_text_config().vocab_size  # per logit position: logits, float32 copy, temporaries
    results: list[list[float]] = [[] for _ in requests]

    def fits(batch: list[int]) -> bool:
        width = max(span[i][1] for i in batch) - min(span[i][0] for i in batch)
        return len(batch) <= ROWS_PER_PASS and len(batch) * width * row_bytes <= logits_mb * 2**20

    for batch in consecutive_batches(order, fits):
        first, stop = min(span[i][0] for i in batch), max(span[i][1] for i in batch)
        rows = ablate(chain.inputs[: chain.prompt_len - 1 + stop], [requests[i][0] for i in batch], replacement)
        logits = model(input_ids=rows.to(model.device), use_cache=False, logits_to_keep=stop - first).logits.float()
        targets = chain.token_ids[first:stop].to(logits.device)  # column c predicts token first + c
        chosen = logits.gather(-1, targets[None, :, None].expand(len(batch), -1, 1))[..., 0]
        token_nll = (logits.logsumexp(-1) - chosen).cpu()  # (R, stop - first)
        for r, i in enumerate(batch):
            results[i] = [float(token_nll[r, s.start - first : s.stop - first].sum()) for s in requests[i][1]]
    return results


@contextlib.contextmanager
def embeddings_require_grad(model: PreTrainedModel) -> Iterator[None]:
    """Gradients with respect to hidden states need a graph, even when no weight takes gradients (frozen or quantized
    weights): the input embeddings' output is made to require grad, so the graph starts there and no weight
    gradient is ever asked for (quanto's backward would compute one for a quantized tied LM head)."""

    def start_graph(module, args, output: torch.Tensor) -> torch.Tensor:
        return output if output.requires_grad else output.requires_grad_(True)

    handle = model.get_input_embeddings().register_forward_hook(start_graph)
    try:
        with torch.enable_grad():
            yield
    finally:
        handle.remove()


def backward_bytes_per_row(config, inputs: int, logit_positions: int, activation_bytes: int = 4) -> int:
    """About what one row of a forward and backward pass over the inputs holds: each layer's saved activations over
    the inputs (some 8 hidden-size and 3 intermediate-size vectors and one attention row per position) and the
    logits, their log-softmax and its gradient (fp32) at the predicting positions. `step_gradient_norms` takes it
    as the cost of one step in its batched backward pass (each step's vector-Jacobian product holds gradients of
    about that size): an upper bound, as the forward activations are held once."""
    text = config.get_text_config()
    hidden = text.hidden_size
    ffn = getattr(text, "intermediate_size", None) or 4 * hidden
    per_position = 8 * hidden + 3 * ffn + text.num_attention_heads * inputs
    return text.num_hidden_layers * inputs * per_position * activation_bytes + 3 * logit_positions * text.vocab_size * 4


def step_gradient_norms(
    model: PreTrainedModel, chain: Chain, steps: list[range], layer: int = 0, memory_mb: float = 256.0
) -> torch.Tensor:
    """(S, N): |∇_{h_j} L_i|, the norm of the gradient of step i's NLL with respect to the hidden state of
    layer `layer` (0 = the embeddings) at every input position j.

    One forward pass over the chain (one row) builds the graph; the steps' losses are then differentiated as a
    batch of vector-Jacobian products (`is_grads_batched`: vmap over the backward pass), so the steps' gradients
    stay apart without a copy of the chain per step (which was slower, with equal results: docs/measurements.md). Inputs
    stop at the last step's tokens (causality makes the gradient at any later position exactly zero), logits cover only
    the steps' predicting positions, and as many steps go together as `backward_bytes_per_row` says fit in `memory_mb`.
    No parameter gradients are kept."""
    norms = torch.zeros(len(steps), len(chain.inputs))
    if not steps:
        return norms
    first, stop = min(s.start for s in steps), max(s.stop for s in steps)
    inputs = chain.inputs[: chain.prompt_len - 1 + stop]
    row_bytes = backward_bytes_per_row(model.config, len(inputs), stop - first, model.dtype.itemsize)
    per_pass = max(1, int(memory_mb * 2**20 // row_bytes))
    with embeddings_require_grad(model):
        out = model(
            input_ids=inputs[None].to(model.device),
            use_cache=False,
            logits_to_keep=stop - first,
            output_hidden_states=True,
        )
        if not out.hidden_states or not -len(out.hidden_states) <= layer < len(out.hidden_states):
            raise ValueError(f"gradient_layer {layer} is out of range for this model's hidden states")
        logp = out.logits[0].float().log_softmax(-1)  # (stop - first, V): row k predicts token first + k
        targets = chain.token_ids.to(logp.device)
        losses = torch.stack([-logp[[t - first for t in step], targets[list(step)]].sum() for step in steps])
        for begin in range(0, len(steps), per_pass):
            count = min(per_pass, len(steps) - begin)
            pick = torch.zeros(count, len(steps), device=losses.device)  # row r selects step begin + r's loss
            pick[torch.arange(count), torch.arange(begin, begin + count)] = 1
            (grad,) = torch.autograd.grad(
                losses,
                out.hidden_states[layer],
                grad_outputs=pick,
                is_grads_batched=True,
                retain_graph=begin + count < len(steps),
            )
            norms[begin : begin + count, : len(inputs)] = grad[:, 0].float().norm(dim=-1).cpu()
    return norms


def ablate(inputs: torch.Tensor, positions_per_row: list[list[int]], replacement: int) -> torch.Tensor:
    """Copies of `inputs` with the given positions of each row replaced by `replacement` (masking)."""
    rows = inputs[None].repeat(len(positions_per_row), 1)
    for row, positions in enumerate(positions_per_row):
        rows[row, positions] = replacement
    return rows


def replacement_id(tokenizer) -> int:
    """The token that stands in for an ablated one: padding, else unknown, else end-of-sequence."""
    for candidate in (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    raise ValueError("the tokenizer has no pad, unk or eos token to ablate spans with")
