"""The terms of the RL objective, each on [batch, T] tensors with a response mask.

    loss = policy (clipped surrogate)  + vf_coef · value (clipped)  − entropy_coef · entropy
           + β · KL (when the KL is in the loss, GRPO)               + ptx_coef · NLL(pretraining text)

How a per-token term becomes a scalar is the `aggregation`:
- "token_mean":    mean over every real token of the batch (PPO);
- "sequence_mean": mean over each sequence's tokens, then over sequences (GRPO, as TRL's "grpo");
- "token_sum_norm": sum over tokens / (batch · max_new_tokens) (Dr. GRPO: no length bias).

Data parallel: every worker holds the same number of sequences, so "sequence_mean" and
"token_sum_norm" of a worker's rows, averaged over the workers' gradients, are those of the
whole batch. A token mean is not: each worker's own token count differs. The loop therefore
passes `num_tokens` = (real tokens of the whole minibatch over every worker) / world size,
so that the mean of the workers' gradients is the gradient of the whole batch's token mean.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from train.completion_logps import token_logps  # log softmax(logits)[token]; rollout imports it from here
from train.rl.advantages import masked_mean

AGGREGATIONS = ("token_mean", "sequence_mean", "token_sum_norm")
KL_ESTIMATORS = ("k1", "k2", "k3")


def token_mean(per_token: torch.Tensor, mask: torch.Tensor, num_tokens: float | None = None) -> torch.Tensor:
    """Σ masked values / the number of tokens: the mask's own count, or `num_tokens` when given
    (data parallel: the whole batch's count / world size, see the module docstring)."""
    mask = mask.to(per_token.dtype)
    if num_tokens is None:
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    # A given count may be fractional (a total / world size), so it is not clamped to 1.
    return (per_token * mask).sum() / max(float(num_tokens), 1e-8)


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, aggregation: str, max_tokens: int | None = None,
              num_tokens: float | None = None) -> torch.Tensor:
    mask = mask.to(per_token.dtype)
    if aggregation == "token_mean":
        return token_mean(per_token, mask, num_tokens)
    if aggregation == "sequence_mean":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if aggregation == "token_sum_norm":
        if not max_tokens:
            raise ValueError("token_sum_norm needs max_tokens (the generation length)")
        return (per_token * mask).sum() / (per_token.size(0) * max_tokens)
    raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {AGGREGATIONS}")


def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from samples of π (Schulman's k1/k2/k3).

    k1 = log π − log π_ref (unbiased, can be negative); k2 = ½ (log-ratio)²;
    k3 = exp(log π_ref − log π) − (log π_ref − log π) − 1 (unbiased, always ≥ 0, GRPO's choice).
    """
    log_ratio = logps - ref_logps
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio ** 2
    if estimator == "k3":
        return torch.exp(-log_ratio) + log_ratio - 1
    raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {KL_ESTIMATORS}")


def clipped_surrogate(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                      clip_low: float = 0.2, clip_high: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO policy loss −min(ρ A, clip(ρ, 1−ε_low, 1+ε_high) A) with ρ = π/π_old,
    and a 0/1 tensor of where the clipped branch was taken (for the clip fraction)."""
    clip_high = clip_low if clip_high is None else clip_high
    ratio = torch.exp(logps - old_logps)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * advantages
    loss = -torch.min(unclipped, clipped)
    return loss, (clipped < unclipped).to(logps.dtype)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip_range: float | None = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token ½ max((V − R)², (clip(V, V_old ± ε) − R)²), and where the clipped branch won.
    `clip_range=None` is the plain squared error."""
    unclipped = (values - returns) ** 2
    if clip_range is None:
        return 0.5 * unclipped, torch.zeros_like(unclipped)
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    clipped = (clipped_values - returns) ** 2
    return 0.5 * torch.max(unclipped, clipped), (clipped > unclipped).to(values.dtype)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of softmax(logits): logsumexp(z) − Σ p z."""
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(-1)


def ptx_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """PPO-ptx's pretraining term: mean next-token negative log-likelihood of the text tokens."""
    logps = token_logps(logits[:, :-1], input_ids[:, 1:])
    mask = torch.ones_like(logps) if attention_mask is None else attention_mask[:, 1:].to(logps.dtype)
    return -masked_mean(logps, mask)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var(R − V) / Var(R) over the masked tokens (1 = perfect critic, ≤ 0 = no better than a constant)."""
    from train.rl.advantages import masked_var

    var_returns = masked_var(returns, mask)
    if var_returns.item() == 0:
        return float("nan")
    return (1 - masked_var(returns - values, mask) / var_returns).item()


@dataclass
class PolicyLossTerms:
    loss: torch.Tensor          # the scalar to backpropagate
    policy: torch.Tensor        # aggregated clipped surrogate
    clip_fraction: torch.Tensor
    entropy: torch.Tensor
    kl: torch.Tensor            # aggregated KL to the reference (0 when not computed)
    approx_kl_old: torch.Tensor  # k3 KL(π_old ‖ π): how far this minibatch moved since the rollout


def policy_objective(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
                     aggregation: str, clip_low: float, clip_high: float | None = None,
                     ref_logps: torch.Tensor | None = None, kl_coef_in_loss: float = 0.0, kl_estimator: str = "k3",
                     kl_importance_weighted: bool = False, entropy: torch.Tensor | None = None,
                     entropy_coef: float = 0.0, max_tokens: int | None = None,
                     num_tokens: float | None = None) -> PolicyLossTerms:
    """Clipped surrogate (+ β·KL per token when the KL is in the loss) aggregated as asked,
    minus the entropy bonus (always a token mean, so its scale does not depend on the aggregation).

    `kl_importance_weighted` multiplies the per-token KL by the ratio π/π_old: the samples come
    from π_old, so this makes the KL's gradient the unbiased reverse-KL gradient (DeepSeek-V3.2;
    TRL's GRPOTrainer does it by default, `use_bias_correction_kl`).

    `num_tokens` replaces the mask's token count in every token mean (the "token_mean"
    aggregation and the entropy bonus): the loop's data-parallel normaliser."""
    per_token, clipped = clipped_surrogate(logps, old_logps, advantages, clip_low, clip_high)
    zero = logps.new_zeros(())
    kl = zero
    if ref_logps is not None and kl_coef_in_loss:
        per_token_kl = kl_estimate(logps, ref_logps, kl_estimator)
        kl = masked_mean(per_token_kl.detach(), mask)
        if kl_importance_weighted:
            per_token_kl = per_token_kl * torch.exp(logps - old_logps)
        per_token = per_token + kl_coef_in_loss * per_token_kl
    policy = aggregate(per_token, mask, aggregation, max_tokens, num_tokens)
    loss = policy
    mean_entropy = zero
    if entropy is not None:
        mean_entropy = token_mean(entropy, mask, num_tokens)
        if entropy_coef:
            loss = loss - entropy_coef * mean_entropy
    with torch.no_grad():
        approx_kl_old = masked_mean(kl_estimate(old_logps, logps, "k3"), mask)
    return PolicyLossTerms(loss=loss, policy=policy.detach(), clip_fraction=masked_mean(clipped, mask),
                           entropy=mean_entropy.detach(), kl=kl, approx_kl_old=approx_kl_old)
