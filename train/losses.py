"""Preference losses: DPO (sigmoid / hinge / ipo, plus the γ-weighted SFT "mixed" term) and
reward-model ranking losses (pairwise, with optional margin, and the ranked-list form).

Every function takes per-sequence quantities (summed completion log-probs, scalar rewards),
so it can be checked against the formulas without a model. The conventions follow TRL 1.16's
`DPOTrainer._compute_loss` so our numbers and TRL's agree on the same batch:
- rewards are β·(log π(y|x) − log π_ref(y|x)), detached;
- `ipo` divides each log-ratio by the completion length before the squared loss;
- the SFT term is the token mean of −log π over every chosen token in the batch.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo")


@dataclass
class DPOLossOutput:
    loss: torch.Tensor              # scalar to backpropagate
    losses: torch.Tensor            # per-pair preference loss, before the SFT term
    chosen_rewards: torch.Tensor    # β · chosen log-ratio, detached
    rejected_rewards: torch.Tensor  # β · rejected log-ratio, detached
    sft_loss: torch.Tensor | None   # token-mean NLL of the chosen responses when γ > 0

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


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    sft_weight: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> DPOLossOutput:
    """DPO loss from per-sequence summed log-probs (shape [batch] each).

    `sft_weight` is γ of the mixed loss: loss = preference loss + γ · NLL(chosen).
    `chosen_lengths` / `rejected_lengths` (completion token counts) are needed by `ipo`
    and by the SFT term.
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; choose one of {DPO_LOSS_TYPES}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    needs_lengths = loss_type == "ipo" or sft_weight
    if needs_lengths and (chosen_lengths is None or (loss_type == "ipo" and rejected_lengths is None)):
        raise ValueError("loss_type='ipo' and sft_weight > 0 need the completion lengths")

    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps

    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * (chosen_logratios - rejected_logratios))
    else:
        # Summed log-ratios grow with length and the squared loss with them; averaging per
        # token keeps β (IPO's τ) comparable across lengths, as TRL does.
        delta = (chosen_logratios / chosen_lengths.clamp(min=1)
                 - rejected_logratios / rejected_lengths.clamp(min=1))
        losses = (delta - 1 / (2 * beta)) ** 2

    loss = losses.mean()
    sft = None
    if sft_weight:
        sft = -policy_chosen_logps.sum() / chosen_lengths.sum().clamp(min=1)
        loss = loss + sft_weight * sft
    return DPOLossOutput(
        loss=loss,
        losses=losses,
        chosen_rewards=beta * chosen_logratios.detach(),
        rejected_rewards=beta * rejected_logratios.detach(),
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
    input ids with prompt and padding set to `ignore_index`. Uses logsumexp rather than
    a full log_softmax so the [batch, T, vocab] log-prob tensor is never kept.
    """
    logits = logits[:, :-1, :]
    labels = labels[:, 1:]
    mask = labels != ignore_index
    safe = labels.masked_fill(~mask, 0)
    picked = torch.gather(logits, 2, safe.unsqueeze(-1)).squeeze(-1).float()
    token_logps = (picked - torch.logsumexp(logits.float(), dim=-1)) * mask
    return token_logps.sum(dim=-1), mask.sum(dim=-1)
