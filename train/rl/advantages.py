"""Advantage estimators, on tensors shaped [batch, T] (response tokens) or [batch] (one score per sample).

Every function takes a `mask` [batch, T] (1 = a real response token, 0 = after EOS or
padding) so it works on right-padded responses of different lengths. Samples of one
prompt are consecutive rows: rows g*G .. g*G+G-1 belong to prompt g (G = group size).

- gae:           Generalised Advantage Estimation with a critic (PPO).
- grpo:          (r - group mean) / (group std + eps), the same value for every token.
- dr_grpo:       r - group mean (no std; its loss sums tokens over a fixed length).
- rloo:          r - mean of the *other* samples of the prompt (leave-one-out).
- reinforce_pp:  REINFORCE++: discounted returns of the per-token rewards (KL included),
                 whitened over the whole batch, no critic.
"""
from __future__ import annotations

import torch

ESTIMATORS = ("gae", "grpo", "dr_grpo", "rloo", "reinforce_pp")
# TRL's GRPOTrainer divides by (std + 1e-4); using the same eps keeps our loss equal to its loss.
GROUP_STD_EPS = 1e-4


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(values, mask)
    count = mask.to(values.dtype).sum()
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased and count > 1:
        var = var * count / (count - 1)
    return var


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries (mean added back when shift_mean is False)."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    out = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(values.dtype)


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token rewards of RLHF-PPO: -kl_coef * KL_t at every token, plus the sequence score
    on the last real token (so the KL penalty is part of the return, as in InstructGPT)."""
    mask = mask.to(kl.dtype)
    rewards = -kl_coef * kl * mask
    last = last_token_positions(mask)
    rows = torch.arange(rewards.size(0), device=rewards.device)
    has_tokens = mask.sum(1) > 0
    rewards[rows[has_tokens], last[has_tokens]] += scores[has_tokens].to(rewards.dtype)
    return rewards


def last_token_positions(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of a right-padded mask (0 for an empty row)."""
    positions = torch.arange(mask.size(1), device=mask.device)
    return (positions * mask.bool()).argmax(dim=1)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) by GAE over each row's masked tokens.

    δ_t = r_t + γ V_{t+1} − V_t with V = 0 after the last real token; A_t = δ_t + γλ A_{t+1};
    returns = A + V (the critic's regression target). Vectorised over the batch, looped over T.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    advantages = torch.zeros_like(values)
    next_advantage = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.size(1))):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        # A padded position contributes nothing and passes nothing back to earlier tokens.
        advantages[:, t] = advantage * mask[:, t]
        next_advantage = advantages[:, t]
        next_value = values[:, t]
    returns = advantages + values
    return advantages * mask, returns * mask


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """G_t = Σ_{s≥t} γ^{s−t} r_s within each row's masked tokens."""
    mask = mask.to(rewards.dtype)
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.size(1))):
        running = (rewards[:, t] + gamma * running) * mask[:, t]
        returns[:, t] = running
    return returns


def _groups(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    if group_size < 1 or scores.numel() % group_size:
        raise ValueError(f"{scores.numel()} samples do not split into groups of {group_size}")
    return scores.view(-1, group_size)


def group_relative(scores: torch.Tensor, group_size: int, scale_by_std: bool = True,
                   eps: float = GROUP_STD_EPS) -> torch.Tensor:
    """GRPO: (r − mean of the prompt's group) / (unbiased std of the group + eps); dr_grpo drops the std."""
    grouped = _groups(scores, group_size)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_by_std:
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped[:, :1])
        advantages = advantages / (std + eps)
    return advantages.reshape(-1)


def leave_one_out(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO: r_i − (Σ_{j≠i} r_j) / (G − 1)."""
    if group_size < 2:
        raise ValueError("rloo needs at least 2 samples per prompt (num_generations >= 2)")
    grouped = _groups(scores, group_size)
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others).reshape(-1)


def broadcast_to_tokens(sequence_advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return sequence_advantages.unsqueeze(1).to(mask.dtype if mask.is_floating_point() else torch.float32) * mask
