"""The paper's Figure-2 attribution baselines, scored on the spans the engine ranks.

Every baseline explains the engine's own target: log p(step k's tokens | prompt + the steps before k), teacher
forced, and gives one score per candidate span of `report.steps[k].dependencies` (same order, higher = more
important). The four attribution methods are Captum's (`pip install -e '.[eval]'`), run through its LLM
wrappers; attention visualisation needs no Captum.

- attention: attention visualisation's raw weights: eager attention, averaged over layers and heads (SAGE: its
  token heads), of the positions that predict the step's tokens (the rows its logits come from), averaged over
  those rows. Mean over layers, not the last layer: on the tiny copy model the copy happens in layer 0, and the
  last layer puts < 4 % of its weight on the copied number.
- gradient: saliency: Captum's layer gradient (`LayerGradientXActivation`, `multiply_by_inputs=False`) of the
  step's log-probability on the input embeddings, |gradient| summed over the embedding dimensions.
- integrated_gradients: `LayerIntegratedGradients` on the input embeddings (one pass per step), from an
  all-padding context (`ig_steps` points), summed over the embedding dimensions (signed).
- lime / shap: `Lime` (ridge surrogate) / `KernelShap` via `LLMAttribution`, the candidate spans being the
  interpretable features: a span absent from a sample has its tokens replaced by the padding token (the engine's
  ablation), every other token stays. `n_samples` perturbations, seeded; the score is the surrogate's coefficient.
- ablation: `FeatureAblation` via `LLMAttribution` over the same features: how much log p(step) falls when that
  one span is masked (leave one span out). The interventional reference: the measure the engine's validation
  checks its claims with, so it tells how far the ground truth agrees with what the step causally rests on.

Token-level scores (attention, gradient, IG) sum over a span's tokens, so on a model that spreads them evenly a
longer span scores higher. LIME and SHAP also need scikit-learn (Captum fits its surrogates with it).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..attention import eager_attention
from ..decoding import Chain
from ..inverse.measure import embeddings_require_grad, replacement_id
from ..inverse.report import Report, SpanRef
from .rank_correlation import spearman

IG_STEPS = 16


@dataclass
class StepTarget:
    """What every baseline explains: log p(target | context), teacher forced."""

    context: torch.Tensor  # (C,) the prompt and the chain before the step
    target: torch.Tensor  # (S,) the step's tokens
    spans: list[SpanRef]  # the candidates; their positions index `context`


def step_target(report: Report, step_index: int) -> StepTarget:
    """The context, tokens and candidate spans of a report's step."""
    if not 0 <= step_index < len(report.steps):
        raise ValueError(f"step_index {step_index} is out of range; the report has {len(report.steps)} steps")
    step = report.steps[step_index]
    if step.token_end <= step.token_start:
        raise ValueError(f"step {step_index} has no tokens to explain")
    chain = Chain.from_report(report)
    sequence = torch.cat([chain.prompt_ids, chain.token_ids])
    start = len(report.prompt_ids) + step.token_start
    spans = [d.span for d in step.dependencies]
    assert all(max(s.positions) < start for s in spans), "a candidate span lies inside or after its step"
    return StepTarget(sequence[:start], sequence[start : len(report.prompt_ids) + step.token_end], spans)


def baseline_span_scores(
    method: str,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    report: Report,
    step_index: int,
    *,
    n_samples: int = 64,
    seed: int = 0,
    ig_steps: int = IG_STEPS,
) -> list[float]:
    """One score per candidate span of `report.steps[step_index].dependencies` (same order; higher = more
    important) by a Figure-2 baseline ("attention", "gradient", "integrated_gradients", "lime", "shap") or by
    leave-one-span-out "ablation".

    Args:
        n_samples: perturbations of LIME and SHAP.
        seed: seeds LIME's and SHAP's sampling (the global RNG is left as it was).
        ig_steps: integration points of integrated gradients.
    """
    if method not in BASELINES:
        raise ValueError(f"unknown baseline method {method!r}; the methods are {tuple(BASELINES)}")
    if n_samples < 1 or ig_steps < 1:
        raise ValueError(f"n_samples and ig_steps must be at least 1, got {n_samples} and {ig_steps}")
    task = step_target(report, step_index)
    if not task.spans:
        return []
    model.eval()
    return BASELINES[method](model, tokenizer, task, Sampling(n_samples, seed, ig_steps))


def span_sums(token_scores: torch.Tensor, spans: Sequence[SpanRef]) -> list[float]:
    """A span's score: the sum of its tokens' scores."""
    return [float(token_scores[span.positions].sum()) for span in spans]


# --- attention visualisation ------------------------------------------------------------------------------


@torch.no_grad()
def attention_token_scores(model: PreTrainedModel, task: StepTarget) -> torch.Tensor:
    """(C,) the attention each context token receives from the positions that predict the step's tokens: mean
    over layers, heads and those positions (eager attention for the pass, then the model's own again)."""
    inputs = torch.cat([task.context, task.target])[:-1]  # the last target token is never an input
    with eager_attention(model, needed=True):
        out = model(input_ids=inputs[None].to(model.device), use_cache=False, output_attentions=True)
    weights = torch.stack(out.attentions)[:, 0].float().mean((0, 1))  # (L, nh, N, N) -> (N, N)
    first = len(task.context) - 1  # the position that predicts the step's first token
    return weights[first:, : len(task.context)].mean(0).cpu()


# --- Captum ------------------------------------------------------------------------------------------------


def _captum():
    try:
        import captum.attr as attr
    except ImportError as error:
        raise ImportError("the attribution baselines need Captum: pip install -e '.[eval]'") from error
    return attr


@functools.cache
def _ids_input_class() -> type:
    """Captum's interpretable text input over given ids, whose features are groups of positions.

    Captum's LLM wrappers accept only their own text input types, and `TextTokenInput` tokenises a string (which
    need not give back the report's ids, and may add special tokens), so this subclass sets its state from ids.
    """
    _captum()
    from captum.attr._utils.interpretable_input import TextTokenInput

    class IdsInput(TextTokenInput):
        def __init__(
            self, ids: torch.Tensor, groups: Sequence[Sequence[int]], values: list[str], tokenizer, baseline: int
        ) -> None:
            self.inp_tensor = self.itp_tensor = ids[None]  # (1, C)
            self.itp_mask, self.skip_tokens = None, None
            self.values, self.tokenizer, self.n_itp_features = values, tokenizer, len(values)
            self.baselines = baseline
            self.members = torch.zeros(len(groups), len(ids))  # (F, C): the tokens each feature holds
            for feature, positions in enumerate(groups):
                self.members[feature, list(positions)] = 1.0

        def to_tensor(self) -> torch.Tensor:
            return torch.ones(1, self.n_itp_features)  # every feature present

        def to_model_input(self, perturbed: torch.Tensor | None = None) -> torch.Tensor:
            if perturbed is None:
                return self.inp_tensor
            absent = (perturbed != 1).float() @ self.members.to(perturbed.device) > 0  # (B, C)
            rows = self.inp_tensor.to(perturbed.device).expand(len(perturbed), -1).clone()
            rows[absent] = self.baselines
            return rows

    return IdsInput


def ids_input(ids: torch.Tensor, groups: Sequence[Sequence[int]], values: list[str], tokenizer):
    """An interpretable input over `ids` whose features are `groups` of positions: a feature absent from a sample
    has its tokens replaced by the padding token (the engine's ablation), every other token stays."""
    return _ids_input_class()(ids, groups, values, tokenizer, replacement_id(tokenizer))


def step_logprob_function(model: PreTrainedModel, task: StepTarget) -> Callable[[torch.Tensor], torch.Tensor]:
    """The attribution target as Captum's forward function: (B, C) contexts -> (B,) log p(step tokens | context)."""

    def step_logprob(contexts: torch.Tensor) -> torch.Tensor:
        target = task.target.to(contexts.device).expand(len(contexts), -1)  # (B, S)
        inputs = torch.cat([contexts, target], dim=1)[:, :-1]  # the last target token is never an input
        logits = model(input_ids=inputs, use_cache=False, logits_to_keep=target.shape[1]).logits  # (B, S, V)
        return logits.float().log_softmax(-1).gather(2, target[..., None])[..., 0].sum(1)

    return step_logprob


def saliency_token_scores(model: PreTrainedModel, task: StepTarget) -> torch.Tensor:
    """(C,) Σ_d |∂ log p(step) / ∂ e_jd| over each context token's embedding e_j: Captum's layer gradient on the
    input embeddings (saliency), one teacher-forced pass.

    Not gradient × input (`LayerGradientXActivation`'s default, what `LLMGradientAttribution` sums): a pre-norm
    model reads every embedding through a norm, so the derivative along the embedding's own scale is near 0
    for exactly the tokens that matter; on a copy model it ranks the copied number last.
    """
    attr = _captum()
    forward = step_logprob_function(model, task)
    saliency = attr.LayerGradientXActivation(forward, model.get_input_embeddings(), multiply_by_inputs=False)
    with embeddings_require_grad(model):
        gradient = saliency.attribute(task.context[None].to(model.device))  # (1, C + S - 1, D)
    return gradient[0, : len(task.context)].detach().float().abs().sum(-1).cpu()


def integrated_gradient_token_scores(model: PreTrainedModel, tokenizer, task: StepTarget, ig_steps: int):
    """(C,) Captum's integrated gradients of the step's log-probability on the input embeddings, from an
    all-padding context, summed over the embedding dimensions (signed: the token's share of the log-prob gain).

    One attribution of the whole step's log-probability (`LLMGradientAttribution` would run one per target token,
    the same sum at S times the cost); the target tokens are the same in input and baseline, so they get none.
    """
    attr = _captum()
    forward = step_logprob_function(model, task)
    context = task.context[None].to(model.device)
    baseline = torch.full_like(context, replacement_id(tokenizer))
    integrated = attr.LayerIntegratedGradients(forward, model.get_input_embeddings())
    with embeddings_require_grad(model):
        scores = integrated.attribute(context, baselines=baseline, n_steps=ig_steps)  # (1, C + S - 1, D)
    return scores[0, : len(task.context)].detach().float().sum(-1).cpu()


def perturbation_span_scores(
    method: str, model: PreTrainedModel, tokenizer, task: StepTarget, n_samples: int, seed: int
) -> list[float]:
    """LIME's or KernelSHAP's coefficient, or the ablation effect, of each span, the spans being the features of
    one teacher-forced pass."""
    attr = _captum()
    if method != "ablation" and importlib.util.find_spec("sklearn") is None:
        raise ImportError("LIME and SHAP fit Captum's scikit-learn surrogate models: pip install scikit-learn")
    if method == "lime":
        from captum._utils.models.linear_model import SkLearnRidge

        # LIME's own package fits ridge (alpha 1); Captum's default lasso (alpha 0.01) zeroes every span whose
        # effect is below 0.01 nats, which on a weak model ties them all at 0
        explainer = attr.Lime(model, interpretable_model=SkLearnRidge(alpha=1.0))
    elif method == "ablation":
        explainer = attr.FeatureAblation(model)
    else:
        explainer = attr.KernelShap(model)
    groups = [span.positions for span in task.spans]
    inp = ids_input(task.context, groups, [s.text for s in task.spans], tokenizer)
    if method == "shap" and len(groups) == 1:
        return [lone_shapley_value(model, task, inp)]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        sampling = {} if method == "ablation" else {"n_samples": n_samples}
        result = attr.LLMAttribution(explainer, tokenizer).attribute(
            inp, target=task.target, forward_in_tokens=False, show_progress=False, **sampling
        )
    return result.seq_attr.float().cpu().tolist()


@torch.no_grad()
def lone_shapley_value(model: PreTrainedModel, task: StepTarget, inp) -> float:
    """The exact Shapley value of a lone feature: the log-prob with it minus without it (Captum's KernelShap
    samples no coalitions from one feature and fails on NaN kernel weights)."""
    step_logprob = step_logprob_function(model, task)
    present, absent = inp.to_model_input(torch.tensor([[1.0], [0.0]])).to(model.device)
    return float(step_logprob(present[None]) - step_logprob(absent[None]))


# --- the registry ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """How the sampling baselines sample: LIME's and SHAP's perturbations and seed, integrated gradients' points."""

    n_samples: int
    seed: int
    ig_steps: int


Baseline = Callable[[PreTrainedModel, PreTrainedTokenizerBase, StepTarget, Sampling], list[float]]


def attention_baseline(model, tokenizer, task: StepTarget, sampling: Sampling) -> list[float]:
    return span_sums(attention_token_scores(model, task), task.spans)


def gradient_baseline(model, tokenizer, task: StepTarget, sampling: Sampling) -> list[float]:
    return span_sums(saliency_token_scores(model, task), task.spans)


def integrated_gradients_baseline(model, tokenizer, task: StepTarget, sampling: Sampling) -> list[float]:
    return span_sums(integrated_gradient_token_scores(model, tokenizer, task, sampling.ig_steps), task.spans)


def _perturbation(method: str) -> Baseline:
    def baseline(model, tokenizer, task: StepTarget, sampling: Sampling) -> list[float]:
        return perturbation_span_scores(method, model, tokenizer, task, sampling.n_samples, sampling.seed)

    baseline.__name__ = f"{method}_baseline"
    return baseline


# The Figure-2 baselines and leave-one-span-out ablation: name -> the scores it gives a step's candidate spans.
BASELINES: dict[str, Baseline] = {
    "attention": attention_baseline,
    "gradient": gradient_baseline,
    "integrated_gradients": integrated_gradients_baseline,
    "lime": _perturbation("lime"),
    "shap": _perturbation("shap"),
    "ablation": _perturbation("ablation"),
}


# --- comparing rankings ------------------------------------------------------------------------------------


def rank_agreement(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of two scorings of the same spans (`rank_correlation.spearman`: average ranks
    for ties); NaN with fewer than 2 spans, a constant side or a NaN score."""
    if len(a) != len(b):
        raise ValueError(f"rank_agreement needs two scorings of the same spans, got {len(a)} and {len(b)} scores")
    if any(math.isnan(v) for v in (*a, *b)):  # no ranking to compare (as scipy's spearmanr propagates NaN)
        return math.nan
    return spearman(a, b)
