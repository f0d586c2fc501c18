"""The curriculum's losses, one function per equation of the paper (eqs. 8–11) and the meta-cognitive head's;
each term is summed over tokens so that any split of a batch adds up exactly."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model import SageCausalLMOutput
from .batches import IGNORE


def total_loss(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Eq. 8: L_total = L_reasoning + λ1·L_explanation + λ2·L_consistency, plus λ_meta·L_meta where the
    meta-cognitive head is trained (`terms` holds the terms a stage computes; `weights` maps each name to its λ)."""
    return sum(value * weights[name] for name, value in terms.items())


def token_nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Σ −log P(token | prefix) over the labelled tokens (L_reasoning, eq. 9, and L_explanation, eq. 10)."""
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE, reduction="sum"
    )


def consistency_sum(out: SageCausalLMOutput, labels: torch.Tensor) -> torch.Tensor:
    """Σ KL(P_forward ‖ P_reconstructed) over the labelled positions the inverse stack reconstructed (eq. 11).

    The inverse stack did not read the hidden states of those positions (`SageForCausalLM.forward(hidden_step=...)`),
    so the loss cannot be met by copying them: the reconstruction has to come from the question and the other steps.
    The forward distribution is the target (detached): the inverse stack learns to reconstruct it, and the loss does
    not pull the forward model towards its own reconstruction.
    """
    mask = labels[:, 1:] != IGNORE
    if out.reconstructed_positions is not None:
        mask = mask & out.reconstructed_positions[:, :-1]
    log_p = out.logits[:, :-1].float().log_softmax(-1).detach()[mask]
    log_q = out.reconstructed_logits[:, :-1].float().log_softmax(-1)[mask]
    return F.kl_div(log_q, log_p, log_target=True, reduction="sum")


def steps_to_hide(step_ids: torch.Tensor, labels: torch.Tensor, turn: int) -> torch.Tensor:
    """The step of each sequence whose reconstruction eq. 11 trains (B,): row r hides step 1 + (turn + r) mod S_r,
    S_r being the last step that holds a labelled token, so that successive turns walk every row through all its
    steps; 0 (the question: nothing labelled) for a row with no labelled step. Deterministic, so a resumed run
    hides what the uninterrupted one would have."""
    labelled = labels != IGNORE
    num_steps = torch.where(labelled, step_ids, torch.zeros_like(step_ids)).amax(-1)
    rows = torch.arange(step_ids.shape[0], device=step_ids.device)
    return torch.where(num_steps > 0, 1 + (turn + rows) % num_steps.clamp(min=1), torch.zeros_like(num_steps))


def meta_sum(out: SageCausalLMOutput, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Binary cross-entropy of the meta-cognitive head where targets are given (−1 = no target).

    `targets["confidence"]` (B, T): 1 where the token's step is correct, 0 where it is wrong;
    `targets["decision"]` (B, T): 1 at the first token of a step whose resampling changed the answer.
    """
    total = out.logits.new_zeros((), dtype=torch.float32)
    for name, logits in (("confidence", out.confidence_logits), ("decision", out.decision_logits)):
        target = targets.get(name)
        if target is None or logits is None:
            continue
        keep = target >= 0
        if keep.any():
            total = total + F.binary_cross_entropy_with_logits(
                logits[keep].float(), target[keep].float(), reduction="sum"
            )
    return total
