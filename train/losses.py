"""Preference losses: DPO (sigmoid / hinge / ipo, conservative DPO by label smoothing, the
reference-free form, plus the γ-weighted SFT "mixed" term), the reference-free ORPO and SimPO
losses, and reward-model ranking losses (pairwise, with optional margin, and the ranked-list form).

Every function takes per-sequence quantities (summed completion log-probs, scalar rewards),
so it can be checked against the formulas without a model. The conventions follow TRL 1.16's
`DPOTrainer._compute_loss` so our numbers and TRL's agree on the same batch:
- rewards are β·(log π(y|x) − log π_ref(y|x)), detached;
- `ipo` divides each log-ratio by the completion length before the squared loss;
- the SFT term is the token mean of −log π over every chosen token in the batch.
ORPO and SimPO follow TRL's ORPOTrainer / CPOTrainer (trl.experimental): both score a response
by its per-token mean log-prob, and their rewards are β times that mean.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from train.completion_logps import token_logps

DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "orpo", "simpo")
# Losses with no reference model at all: the stage loads none for them.
REFERENCE_FREE_LOSS_TYPES = ("orpo", "simpo")
# Losses where a label-smoothing ε has a meaning (the probability that a label is flipped).
SMOOTHABLE_LOSS_TYPES = ("sigmoid", "simpo")


@dataclass
class DPOLossOutput:
    loss: torch.Tensor              # scalar to backpropagate
    losses: torch.Tensor            # per-pair preference loss, before the SFT term
    chosen_rewards: torch.Tensor    # β · chosen log-ratio (β · mean log-prob for orpo/simpo), detached
    rejected_rewards: torch.Tensor  # the same for the rejected responses
    sft_loss: torch.Tensor | None   # token-mean NLL of the chosen responses when γ > 0 (always for orpo)

    @property
    def accuracy(self) -> torch.Tensor:
        return (self.chosen_rewards > self.rejected_rewards).float().mean()

    @property
    def margins(self) -> torch.Tensor:
        return (self.chosen_rewards - self.rejected_rewards).mean()

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """The numbers a DPO run logs, named as TRL names them."""
        out = {
            "rewards/chosen": self.chosen_rewards.mean().item(),
            "rewards/rejected": self.rejected_rewards.mean().item(),
            "rewards/accuracies": self.accuracy.item(),
            "rewards/margins": self.margins.item(),
        }
        if self.sft_loss is not None:
            out["sft_loss"] = self.sft_loss.detach().item()
        return {prefix + k: v for k, v in out.items()}


def needs_reference(loss_type: str, reference_free: bool = False) -> bool:
    """Whether a loss reads reference log-probs (the stage loads no reference model otherwise)."""
    return not reference_free and loss_type not in REFERENCE_FREE_LOSS_TYPES


def check_dpo_options(loss_type: str, beta: float, label_smoothing: float = 0.0, sft_weight: float = 0.0) -> None:
    """Raise ValueError naming the option where a combination has no defined loss."""
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; choose one of {DPO_LOSS_TYPES}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        # At ε = 0.5 both labels weigh the same and the loss carries no preference.
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing and loss_type not in SMOOTHABLE_LOSS_TYPES:
        raise ValueError(f"label_smoothing applies to loss_type {' or '.join(SMOOTHABLE_LOSS_TYPES)}, "
                         f"not {loss_type!r}")
    if loss_type == "orpo" and sft_weight:
        raise ValueError("loss_type 'orpo' has its own NLL term (weight 1); leave sft_weight at 0")


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − eˣ) for x < 0, accurate at both ends (Mächler's split at −log 2)."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _smoothed_sigmoid_loss(z: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """−(1−ε)·log σ(z) − ε·log σ(−z): the sigmoid loss when a label is flipped with probability ε."""
    losses = -F.logsigmoid(z)
    if label_smoothing:
        losses = (1 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-z)
    return losses


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None,
    ref_rejected_logps: torch.Tensor | None,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    sft_weight: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    reference_free: bool = False,
    simpo_gamma: float = 0.5,
) -> DPOLossOutput:
    """DPO-family loss from per-sequence summed log-probs (shape [batch] each).

    - `sigmoid` / `hinge` / `ipo`: DPO and its variants on log-ratios to the reference;
      `reference_free` sets the reference log-probs to zero (a uniform reference), and
      `label_smoothing` ε gives conservative DPO (cDPO) for `sigmoid`.
    - `orpo`: NLL(chosen) − β · mean log σ(log odds(chosen) − log odds(rejected)), with the
      odds of the per-token mean log-prob; β is ORPO's λ. No reference.
    - `simpo`: −log σ(β · (mean log π(chosen) − mean log π(rejected)) − `simpo_gamma`), with
      label smoothing as for sigmoid. No reference.
    `sft_weight` is γ of the mixed loss: loss = preference loss + γ · NLL(chosen) (for simpo it
    is CPO's α). The completion token counts are needed by `ipo`, `orpo`, `simpo` and the SFT term.
    """
    check_dpo_options(loss_type, beta, label_smoothing, sft_weight)
    uses_reference = needs_reference(loss_type, reference_free)
    has_reference = ref_chosen_logps is not None and ref_rejected_logps is not None
    if uses_reference and not has_reference:
        raise ValueError(f"loss_type {loss_type!r} needs reference log-probs (or set reference_free)")
    if not uses_reference and (ref_chosen_logps is not None or ref_rejected_logps is not None):
        raise ValueError(f"loss_type {loss_type!r} with reference_free={reference_free} does not use reference "
                         "log-probs; pass None rather than have them silently ignored")
    length_normalised = loss_type in ("ipo", "orpo", "simpo")
    if (length_normalised or sft_weight) and (chosen_lengths is None or (length_normalised and rejected_lengths is None)):
        raise ValueError(f"loss_type {loss_type!r} (or sft_weight > 0) needs the completion lengths")

    if loss_type in REFERENCE_FREE_LOSS_TYPES:
        chosen_scores = policy_chosen_logps / chosen_lengths.clamp(min=1)
        rejected_scores = policy_rejected_logps / rejected_lengths.clamp(min=1)
    elif reference_free:
        chosen_scores, rejected_scores = policy_chosen_logps, policy_rejected_logps
    else:
        chosen_scores = policy_chosen_logps - ref_chosen_logps
        rejected_scores = policy_rejected_logps - ref_rejected_logps

    if loss_type == "sigmoid":
        losses = _smoothed_sigmoid_loss(beta * (chosen_scores - rejected_scores), label_smoothing)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * (chosen_scores - rejected_scores))
    elif loss_type == "ipo":
        # Summed log-ratios grow with length and the squared loss with them; averaging per
        # token keeps β (IPO's τ) comparable across lengths, as TRL does.
        delta = (chosen_scores / chosen_lengths.clamp(min=1)
                 - rejected_scores / rejected_lengths.clamp(min=1))
        losses = (delta - 1 / (2 * beta)) ** 2
    elif loss_type == "simpo":
        losses = _smoothed_sigmoid_loss(beta * (chosen_scores - rejected_scores) - simpo_gamma, label_smoothing)
    else:  # orpo
        # log odds(y) = log p − log(1 − p) with p = exp(mean log-prob); fp32 keeps log1mexp
        # finite for mean log-probs near 0, where bf16 rounds p to 1.
        chosen_mean, rejected_mean = chosen_scores.float(), rejected_scores.float()
        log_odds = (chosen_mean - rejected_mean) - (_log1mexp(chosen_mean) - _log1mexp(rejected_mean))
        losses = -beta * F.logsigmoid(log_odds)

    loss = losses.mean()
    sft = None
    if sft_weight or loss_type == "orpo":
        sft = -policy_chosen_logps.sum() / chosen_lengths.sum().clamp(min=1)
        loss = loss + (sft_weight if loss_type != "orpo" else 1.0) * sft
    return DPOLossOutput(
        loss=loss,
        losses=losses,
        chosen_rewards=beta * chosen_scores.detach(),
        rejected_rewards=beta * rejected_scores.detach(),
        sft_loss=sft,
    )


# ---------------------------------------------------------------- reward model
def pairwise_rm_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coefficient: float | None = None,
) -> torch.Tensor:
    """−log σ(r_chosen − r_rejected − margin), averaged over pairs.

    `margin` (per pair) asks for a larger gap where the labels say one response is much
    better; `center_coefficient` adds c·mean((r_c + r_r)²) to keep rewards centred on zero.
    """
    diff = chosen_rewards - rejected_rewards
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    if center_coefficient:
        loss = loss + center_coefficient * ((chosen_rewards + rejected_rewards) ** 2).mean()
    return loss


def ranked_pairs(k: int) -> tuple[list[int], list[int]]:
    """Indices (better, worse) of all K(K−1)/2 pairs of a list ranked best first."""
    pairs = list(itertools.combinations(range(k), 2))
    return [i for i, _ in pairs], [j for _, j in pairs]


def ranked_list_rm_loss(rewards: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """InstructGPT's ranking loss: rewards [batch, K] ordered best first.

    Each prompt contributes the mean of −log σ(r_better − r_worse) over its K(K−1)/2 pairs;
    prompts are then averaged, so a prompt with more responses does not weigh more.
    `mask` [batch, K] marks real responses when lists have different lengths (padding at the end).
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [batch, K], got shape {tuple(rewards.shape)}")
    k = rewards.size(1)
    if k < 2:
        raise ValueError("a ranked list needs at least two responses")
    better, worse = ranked_pairs(k)
    pair_losses = -F.logsigmoid(rewards[:, better] - rewards[:, worse])  # [batch, K(K-1)/2]
    if mask is None:
        return pair_losses.mean()
    mask = mask.bool()
    valid = (mask[:, better] & mask[:, worse]).to(pair_losses.dtype)
    per_prompt = (pair_losses * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1)
    has_pair = valid.sum(dim=1) > 0
    return per_prompt[has_pair].mean()


def pairwise_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> float:
    return (chosen_rewards > rejected_rewards).float().mean().item()


# ---------------------------------------------------------------- log-probs
def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the labelled tokens of each sequence, and their counts.

    `logits` [batch, T, vocab] predict the next token; `labels` [batch, T] hold the
    input ids with prompt and padding set to `ignore_index`. Per token this is
    `completion_logps.token_logps` (logsumexp, so no [batch, T, vocab] log-prob tensor is kept).
    """
    labels = labels[:, 1:]
    mask = labels != ignore_index
    safe = labels.masked_fill(~mask, 0)  # any valid index: masked positions are zeroed below
    return (token_logps(logits[:, :-1, :], safe) * mask).sum(dim=-1), mask.sum(dim=-1)
