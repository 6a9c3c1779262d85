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
autograd, when the labelled positions take two or more chunks, each chunk is recomputed in
backward (activation checkpointing), so only one chunk of logits is alive at a time; a
single chunk is not recomputed (see `labelled_token_logps`).

Packed rows (padding-free DPO, train.packed_pairs) hold several sequences in one row, so
"per row" is not "per sequence": `sequence_index` [batch, T] says which sequence each
position belongs to, and the same chunked head returns per-sequence sums.

Models whose logits are scaled or soft-capped after the head (Gemma 2's
`final_logit_softcapping`, Cohere's `logit_scale`) keep the full-logits path: the result
must equal `train.losses.sequence_logps` on the model's own logits (packed rows there ask
the model for the labelled positions' logits only, `logits_to_keep`).

`token_logps` is the one gather-minus-logsumexp of the project's log-prob paths
(this head, the full-logits packed path, the RL objective).
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
    logps: torch.Tensor  # [sequences] summed log-probs of the labelled tokens (a sequence = a batch row unless packed)
    counts: torch.Tensor  # [sequences] number of labelled tokens


def _text_config(model):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def supports_completion_head(model) -> bool:
    config = _text_config(model)
    return all(getattr(config, name, None) in (None, 1.0) for name in _LOGIT_TRANSFORMS) \
        and model.get_output_embeddings() is not None


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] at each position, in fp32: `logits` [..., vocab], `targets` [...].
    Never builds the [..., vocab] log-softmax tensor (logsumexp reduces it away)."""
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _chunk_logps(lm_head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return token_logps(lm_head(hidden), targets)


def _sum_by_sequence(logps: torch.Tensor, owner: torch.Tensor, num_sequences: int) -> CompletionLogps:
    """Per-sequence sums and counts of per-token `logps`, `owner[i]` being token i's sequence."""
    sums = logps.new_zeros(num_sequences).index_add(0, owner, logps)
    return CompletionLogps(logps=sums, counts=torch.bincount(owner, minlength=num_sequences))


def _owners(labels: torch.Tensor, mask: torch.Tensor, sequence_index: torch.Tensor | None,
            num_sequences: int | None) -> tuple[torch.Tensor, int]:
    """The sequence of each labelled target (`mask` is over labels[:, 1:]) and the number of sequences.
    A target at position t + 1 belongs to the sequence of t + 1: in a packed row a sequence's
    first token is never labelled, so that is also the sequence of the position predicting it."""
    if sequence_index is None:  # one sequence per row
        sequence_index = torch.arange(labels.shape[0], device=labels.device)[:, None].expand_as(labels)
        num_sequences = labels.shape[0]
    elif num_sequences is None:
        num_sequences = int(sequence_index.max()) + 1
    return sequence_index[:, 1:][mask], num_sequences


def labelled_token_logps(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module,
                         chunk_tokens: int = 4096, sequence_index: torch.Tensor | None = None,
                         num_sequences: int | None = None) -> CompletionLogps:
    """Summed next-token log-probs per sequence from the backbone's hidden states.

    `hidden` [batch, T, H] are the last hidden states, `labels` [batch, T] the input ids
    with unlabelled positions at IGNORE_INDEX (the same layout `sequence_logps` takes).
    Each row is one sequence unless `sequence_index` [batch, T] gives every position's
    sequence (0 .. num_sequences - 1; packed rows): then the sums are per sequence, and a
    chunk of `chunk_tokens` labelled positions may span several sequences."""
    hidden, targets = hidden[:, :-1], labels[:, 1:]
    mask = targets != IGNORE_INDEX
    owner, num_sequences = _owners(labels, mask, sequence_index, num_sequences)
    selected, selected_targets = hidden[mask], targets[mask]
    # Checkpointing keeps one chunk of logits alive instead of all of them. With a single chunk
    # there is nothing to save: its logits are alive at the head's backward either way (kept for
    # it, or recomputed by the checkpoint), so the recompute would only cost a second head matmul.
    # (Kept, they also live through a DPO reference forward; that peak stays below the head
    # backward's, which holds the logits and their gradient.)
    checkpointed = torch.is_grad_enabled() and selected.requires_grad and selected.shape[0] > chunk_tokens
    pieces = []
    for start in range(0, selected.shape[0], chunk_tokens):
        h, t = selected[start:start + chunk_tokens], selected_targets[start:start + chunk_tokens]
        if checkpointed:
            pieces.append(checkpoint(_chunk_logps, lm_head, h, t, use_reentrant=False))
        else:
            pieces.append(_chunk_logps(lm_head, h, t))
    logps = torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
    return _sum_by_sequence(logps, owner, num_sequences)


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


def _forward_with_completion_head(self, *args, completion_labels: torch.Tensor | None = None,
                                  completion_sequence_index: torch.Tensor | None = None,
                                  completion_num_sequences: int | None = None, **kwargs):
    """The patched forward. It looks everything up on `self` (no closure over the model) so a
    deep copy of the model calls its own class forward and backbone. `completion_sequence_index`
    and `completion_num_sequences` are labelled_token_logps's `sequence_index` / `num_sequences`."""
    if completion_labels is None:
        return type(self).forward(self, *args, **kwargs)
    # peft passes labels=None, return_dict=None, ... through; the backbone needs none of them.
    kwargs = {k: v for k, v in kwargs.items()
              if v is not None and k not in ("labels", "logits_to_keep", "num_items_in_batch", "return_dict")}
    kwargs["use_cache"] = False
    hidden = self.get_decoder()(*args, **kwargs).last_hidden_state
    return labelled_token_logps(hidden, completion_labels, self.get_output_embeddings(), self._raymill_chunk_tokens,
                                completion_sequence_index, completion_num_sequences)


def completion_logps(model, batch: dict, labels_key: str = "labels", sequence_index: torch.Tensor | None = None,
                     num_sequences: int | None = None) -> CompletionLogps:
    """Summed log-probs and counts of `batch[labels_key]` under `model` (wrapped or not):
    through the completion head when the innermost model has one, else from the model's logits.

    The model sees the batch's input_ids and, where present, attention_mask and position_ids.
    `sequence_index` / `num_sequences`: packed rows, as in `labelled_token_logps`."""
    from train.losses import sequence_logps

    inner = model
    while hasattr(inner, "module"):  # DDP / DeepSpeed engine
        inner = inner.module
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    labels = batch[labels_key]
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids") if key in batch}
    if getattr(inner, _MARK, False):
        return model(**inputs, completion_labels=labels, completion_sequence_index=sequence_index,
                     completion_num_sequences=num_sequences)
    if sequence_index is None:
        logps, counts = sequence_logps(model(**inputs, use_cache=False).logits, labels)
        return CompletionLogps(logps=logps, counts=counts)
    # Packed rows without the head: the model's own logits (its transforms applied), only at the
    # positions whose next token is labelled in some row.
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    keep = mask.any(dim=0).nonzero().squeeze(1)
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits  # [batch, len(keep), vocab]
    kept_mask = mask[:, keep]
    owner, num_sequences = _owners(labels, mask, sequence_index, num_sequences)
    return _sum_by_sequence(token_logps(logits[kept_mask], targets[:, keep][kept_mask]), owner, num_sequences)
