"""Rollouts: sample responses with HF `generate`, and score tokens of [prompt | response] batches.

Layout of a rollout batch: prompts left-padded to one width P, responses right-padded
to the longest response R. Left padding lets `generate` append to every row at once;
position ids count from each row's first real token, so a padded row sees the same
positions as an unpadded one (in generation and in every later forward pass).
A response ends at its first EOS token (kept, so the model learns to stop) and its
mask is 0 after it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Sequence

import torch


@dataclass
class SamplingSettings:
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (RL samples), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class RolloutBatch:
    prompt_ids: torch.Tensor      # [N, P] left-padded
    prompt_mask: torch.Tensor     # [N, P]
    response_ids: torch.Tensor    # [N, R] right-padded
    response_mask: torch.Tensor   # [N, R] 1 up to and including the first EOS
    prompt_index: list[int] = field(default_factory=list)  # row -> index of its prompt in the step's prompts

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    @property
    def position_ids(self) -> torch.Tensor:
        return positions_from_mask(self.attention_mask)

    def __len__(self) -> int:
        return self.prompt_ids.size(0)

    def select(self, rows: torch.Tensor | Sequence[int]) -> "RolloutBatch":
        rows = torch.as_tensor(rows, dtype=torch.long)
        index = [self.prompt_index[i] for i in rows.tolist()] if self.prompt_index else []
        return RolloutBatch(*(getattr(self, f.name)[rows] for f in fields(self) if f.name != "prompt_index"),
                            prompt_index=index)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.as_tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask


def response_mask(response_ids: torch.Tensor, eos_ids: Sequence[int]) -> torch.Tensor:
    """1 for every token up to and including the first EOS of each row, 0 after it."""
    is_eos = torch.isin(response_ids, torch.as_tensor(list(eos_ids), dtype=response_ids.dtype))
    # Number of EOS tokens strictly before each position: 0 means still inside the response.
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return (eos_before == 0).long()


def eos_token_ids(model, tokenizer) -> list[int]:
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured] if configured is not None else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return [int(i) for i in ids]


@torch.no_grad()
def sample_responses(model, prompts: Sequence[Sequence[int]], samples_per_prompt: int, settings: SamplingSettings,
                     eos_ids: Sequence[int], pad_id: int, generator_seed: int | None = None,
                     share_prompts: bool = True) -> RolloutBatch:
    """`samples_per_prompt` responses to each prompt (rows of one prompt are consecutive)."""
    from train.rl.shared_prompts import prefilled_cache

    device = next(model.parameters()).device
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    prompt_ids, prompt_mask = left_pad(repeated, pad_id)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    was_training = model.training
    model.eval()
    try:
        # Rows of one prompt share its keys/values: the prompt runs once, not samples_per_prompt times.
        cache = prefilled_cache(model, prompt_ids, prompt_mask) if share_prompts and samples_per_prompt > 1 else None
        out = model.generate(
            input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True, max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k or None,
            eos_token_id=list(eos_ids), pad_token_id=pad_id, use_cache=True, **({"cache": cache} if cache else {}),
        )
    finally:
        model.train(was_training)
    response_ids = out[:, prompt_ids.size(1):]
    if response_ids.size(1) == 0:  # every row stopped before producing a token (cannot happen with min 1 new token)
        response_ids = torch.full((len(repeated), 1), pad_id, dtype=torch.long, device=device)
    mask = response_mask(response_ids, eos_ids)
    response_ids = response_ids.masked_fill(mask == 0, pad_id)
    index = [i for i in range(len(prompts)) for _ in range(samples_per_prompt)]
    return RolloutBatch(prompt_ids, prompt_mask, response_ids, mask, prompt_index=index)


@dataclass
class TokenOutputs:
    logps: torch.Tensor                 # [N, R] log π(response token | context) at the sampling temperature
    entropy: torch.Tensor | None        # [N, R]
    hidden: torch.Tensor | None         # [N, R, H] last hidden state before each response token (value heads)


def response_outputs(model, batch: RolloutBatch, temperature: float = 1.0, with_entropy: bool = False,
                     with_hidden: bool = False, entropy_grad: bool = True, share_prompts: bool = True) -> TokenOutputs:
    """Per-token log-probs (and entropy, hidden states) of the response tokens under `model`.

    Logits are divided by the sampling temperature, so log-probs are those of the
    distribution the tokens were drawn from (the ratio π/π_old is then exact).
    Only the response's positions get logits: the prompt's logits are never built.
    Rows that share a prompt (the G samples of GRPO/RLOO) run that prompt once
    (train.rl.shared_prompts) unless `share_prompts` is False; the result is the same.
    `entropy_grad=False` computes the entropy as a metric only, outside autograd (no
    softmax over the vocabulary is kept for the backward pass).
    """
    from train.rl.objective import entropy_from_logits, token_logps
    from train.rl.shared_prompts import shared_prompt_forward

    width = batch.response_ids.size(1)
    shared = shared_prompt_forward(model, batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                                   batch.response_mask, with_hidden=with_hidden) if share_prompts else None
    if shared is not None:
        logits, hidden = shared
    else:
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                    use_cache=False, logits_to_keep=width + 1, output_hidden_states=with_hidden)
        # The logit at position i predicts token i + 1: the response's logits are the R positions before its tokens.
        logits = out.logits[:, :-1]
        hidden = out.hidden_states[-1][:, -width - 1:-1] if with_hidden else None
    logits = logits / temperature
    logps = token_logps(logits, batch.response_ids)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(torch.is_grad_enabled() and entropy_grad):
            entropy = entropy_from_logits(logits)
    return TokenOutputs(logps=logps, entropy=entropy, hidden=hidden)
