"""Log-probs of the labelled (completion) tokens without the full [batch, T, vocab] logits.

DPO, ORPO/SimPO and the reference pass only need log p(token) at the response positions.
The model's own forward projects every position, prompt and padding included, through
the LM head: on a 150k-token vocabulary that is gigabytes of logits per batch, most of
them thrown away. `add_completion_head(model)` gives the model a second way through its
forward: `model(input_ids, attention_mask, completion_labels=labels)` runs the backbone,
keeps the hidden states of the positions whose next token is labelled, and projects
those through the LM head in chunks of `chunk_tokens` rows, returning each sequence's
summed log-probs and label count (`CompletionLogps`).

Why a patched forward and not a helper that calls the backbone directly: the call still
goes through whatever wraps the model (peft, DDP, DeepSpeed), so the wrappers' forward
hooks (DDP's gradient bookkeeping, ZeRO-3's parameter gathering) run as usual. Under
autograd each chunk is recomputed in backward (activation checkpointing), so only one
chunk of logits is alive at a time.

Models whose logits are scaled or soft-capped after the head (Gemma 2's
`final_logit_softcapping`, Cohere's `logit_scale`) keep the full-logits path: the result
must equal `train.losses.sequence_logps` on the model's own logits.
"""
from __future__ import annotations

import types
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
_MARK = "_raymill_completion_head"
# Config attributes that transform the logits after the LM head: such models keep the full path.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "logits_scaling")


@dataclass
class CompletionLogps:
    logps: torch.Tensor  # [batch] summed log-probs of the labelled tokens
    counts: torch.Tensor  # [batch] number of labelled tokens


def _text_config(model):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def supports_completion_head(model) -> bool:
    config = _text_config(model)
    return all(getattr(config, name, None) in (None, 1.0) for name in _LOGIT_TRANSFORMS) \
        and model.get_output_embeddings() is not None


def _chunk_logps(lm_head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = lm_head(hidden).float()
    picked = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
    return picked - torch.logsumexp(logits, dim=-1)


def labelled_token_logps(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module,
                         chunk_tokens: int = 4096) -> CompletionLogps:
    """Summed next-token log-probs per sequence from the backbone's hidden states.

    `hidden` [batch, T, H] are the last hidden states, `labels` [batch, T] the input ids
    with unlabelled positions at IGNORE_INDEX (the same layout `sequence_logps` takes)."""
    hidden, targets = hidden[:, :-1], labels[:, 1:]
    mask = targets != IGNORE_INDEX
    rows = mask.nonzero(as_tuple=True)[0]
    selected, selected_targets = hidden[mask], targets[mask]
    pieces = []
    for start in range(0, selected.shape[0], chunk_tokens):
        h, t = selected[start:start + chunk_tokens], selected_targets[start:start + chunk_tokens]
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(checkpoint(_chunk_logps, lm_head, h, t, use_reentrant=False))
        else:
            pieces.append(_chunk_logps(lm_head, h, t))
    token_logps = torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
    sums = torch.zeros(labels.shape[0], dtype=token_logps.dtype, device=token_logps.device)
    return CompletionLogps(logps=sums.index_add(0, rows, token_logps), counts=mask.sum(dim=-1))


def add_completion_head(model, chunk_tokens: int = 4096) -> bool:
    """Let `model(..., completion_labels=labels)` return CompletionLogps (see the module doc).

    `model` is the transformers model itself (under any peft wrapper: pass
    `peft_model.get_base_model()`). Returns False, changing nothing, for models whose
    logits are transformed after the head. Idempotent."""
    if getattr(model, _MARK, False):
        return True
    if not supports_completion_head(model):
        return False
    model.forward = types.MethodType(_forward_with_completion_head, model)
    model._raymill_chunk_tokens = chunk_tokens
    setattr(model, _MARK, True)
    return True


def _forward_with_completion_head(self, *args, completion_labels: torch.Tensor | None = None, **kwargs):
    """The patched forward. It looks everything up on `self` (no closure over the model) so a
    deep copy of the model calls its own class forward and backbone."""
    if completion_labels is None:
        return type(self).forward(self, *args, **kwargs)
    # peft passes labels=None, return_dict=None, ... through; the backbone needs none of them.
    kwargs = {k: v for k, v in kwargs.items()
              if v is not None and k not in ("labels", "logits_to_keep", "num_items_in_batch", "return_dict")}
    kwargs["use_cache"] = False
    hidden = self.get_decoder()(*args, **kwargs).last_hidden_state
    return labelled_token_logps(hidden, completion_labels, self.get_output_embeddings(), self._raymill_chunk_tokens)


def completion_logps(model, batch: dict, labels_key: str = "labels") -> CompletionLogps:
    """Summed log-probs and counts of `batch[labels_key]` under `model` (wrapped or not):
    through the completion head when the innermost model has one, else from full logits."""
    from train.losses import sequence_logps

    inner = model
    while hasattr(inner, "module"):  # DDP / DeepSpeed engine
        inner = inner.module
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    labels = batch[labels_key]
    if getattr(inner, _MARK, False):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], completion_labels=labels)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    logps, counts = sequence_logps(logits, labels)
    return CompletionLogps(logps=logps, counts=counts)
