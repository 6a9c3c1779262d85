"""Sample and score the G responses of a prompt with the prompt run through the model once, not G times.

A GRPO/RLOO rollout holds G responses per prompt, and every forward over it (generation's
prefill, the reference's no-grad pass, the policy's update pass) would run each prompt's
tokens G times: with prompts of P tokens and responses of R, a fraction
(G − 1)/G · P/(P + R) of the scoring work is repeated.
Here the distinct prompts go through the model alone, filling a key/value cache; the cache's
rows are then gathered back to one per response, and the responses run on top of it.
Attention is causal, so every response token sees exactly what it sees in the one-pass
forward (its prompt, then its own earlier tokens), and the logits are the same up to float
rounding. Under autograd the gather sums each response's gradient into its prompt's keys
and values, so the gradient is the same too.

Used only where it cannot change the result: a cache made only of plain full-attention
layers (no sliding window, no linear-attention or shared-KV layers), no gradient
checkpointing (its recomputation would write the cache twice), and a batch in which some
rows share their prompt. Anything else takes the one-pass forward.
"""
from __future__ import annotations

import torch


def distinct_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(row of each distinct prompt, distinct prompt of each row), or None when no two rows share one.

    Rows are compared by their tokens and mask, so any row order works (minibatches of shuffled rows)."""
    keys = torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], dim=1)
    unique, inverse = torch.unique(keys, dim=0, return_inverse=True)
    if unique.size(0) == keys.size(0):
        return None
    rows = torch.arange(keys.size(0), device=keys.device)
    first = torch.full((unique.size(0),), keys.size(0), dtype=torch.long, device=keys.device)
    first = first.scatter_reduce(0, inverse, rows, reduce="amin")
    return first, inverse


def plain_cache(model):
    """A DynamicCache for `model` if every layer of it is a plain full-attention layer, else None."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    # What transformers' is_activation_checkpointing reads, through any wrapper (peft) and version.
    if any(getattr(module, "gradient_checkpointing", False) is True for module in model.modules()):
        return None
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return None
    cache = DynamicCache(config=config)
    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    return cache


def shared_prompt_forward(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response_ids: torch.Tensor,
                          response_mask: torch.Tensor, with_hidden: bool = False):
    """(logits [N, R, V], last hidden states [N, R, H] or None) at the positions before each response
    token, as the one-pass forward over [prompt | response] gives them; None when this path does not
    apply (see the module doc), and the caller runs the one-pass forward."""
    from train.rl.rollout import positions_from_mask

    width = response_ids.size(1)
    shared = distinct_prompts(prompt_ids, prompt_mask) if width >= 2 else None
    cache = plain_cache(model) if shared is not None else None
    if cache is None:
        return None
    first, inverse = shared
    prompt_mask_u = prompt_mask[first]
    # Left padding: each prompt's last position is a real token, whose logits predict the first response token.
    head = model(input_ids=prompt_ids[first], attention_mask=prompt_mask_u, position_ids=positions_from_mask(prompt_mask_u),
                 cache=cache, use_cache=True, logits_to_keep=1, output_hidden_states=with_hidden)
    cache.batch_select_indices(inverse)
    # The last response token only predicts past the response: it is not fed.
    attention_mask = torch.cat([prompt_mask, response_mask[:, :-1]], dim=1)
    positions = positions_from_mask(attention_mask)[:, prompt_ids.size(1):]
    tail = model(input_ids=response_ids[:, :-1], attention_mask=attention_mask, position_ids=positions, cache=cache,
                 use_cache=True, output_hidden_states=with_hidden)
    logits = torch.cat([head.logits[inverse], tail.logits], dim=1)
    hidden = None
    if with_hidden:
        hidden = torch.cat([head.hidden_states[-1][inverse][:, -1:], tail.hidden_states[-1]], dim=1)
    return logits, hidden


def prefilled_cache(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor):
    """For `generate`: a cache holding the keys/values of every row's prompt but its last token,
    computed once per distinct prompt and gathered to each row; None where the module doc's
    conditions do not hold (then `generate` runs the whole prompt of every row itself).

    `generate` given this cache feeds only each row's last prompt token in its first step, so
    G samples of a prompt cost one prompt forward, not G."""
    from train.rl.rollout import positions_from_mask

    shared = distinct_prompts(prompt_ids, prompt_mask) if prompt_ids.size(1) >= 2 else None
    cache = plain_cache(model) if shared is not None else None
    if cache is None:
        return None
    first, inverse = shared
    head_mask = prompt_mask[first, :-1]
    model(input_ids=prompt_ids[first, :-1], attention_mask=head_mask, position_ids=positions_from_mask(head_mask),
          cache=cache, use_cache=True, logits_to_keep=1)
    cache.batch_select_indices(inverse)
    return cache
