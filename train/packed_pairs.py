"""Padding-free DPO batches: the 2B sequences of B pairs as one packed row.

A padded pair batch is [2B, longest]: every sequence is padded to the longest of the
batch, and each layer's projections and MLP run over the padding too. On the bench's
330 seed-task pairs (batch 4, cutoff 512) 42% of the positions computed are padding.
Packed, the sequences sit end to end in one [1, total] row with position_ids restarting
at 0 per sequence; transformers keeps them from attending to each other (from the
position_ids, with no attention_mask), and on CPU the `sdpa_segments` attention runs
causal SDPA on each sequence alone (train.segment_attention), so a step costs the real
tokens only. The log-probs are the padded batch's (same tokens, same positions, same
causal context), up to float rounding.

Per-sequence sums come from the same chunked completion head as the padded batch
(train.completion_logps), given each position's sequence index, so a packed step never
holds the [labelled tokens, vocab] logits at once, whatever the vocabulary. (A model
without the head, its logits transformed after it, gives the labelled positions' logits
from its own forward: still fewer than the full logits the padded batch then needs.)
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from train.completion_logps import completion_logps
from train.preference_data import pair_extras

IGNORE_INDEX = -100


def _ids(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.int64)


def pack_pairs(examples: list[dict]) -> dict:
    """One [1, total] row: the B chosen sequences (prompt + response) first, then the B rejected
    (the padded batch's order, so log-probs still split with `.chunk(2)`).

    Keys: input_ids, position_ids (restarting at 0 per sequence), labels (response tokens;
    IGNORE_INDEX on prompts and on every sequence's first token, which no earlier token of
    its own sequence predicts), sequence_lengths [2B]; ids, margins and precomputed
    reference log-probs pass through as in train.preference_data.collate_pairs."""
    if not examples:
        raise ValueError("pack_pairs got an empty batch")
    ids, labels, positions, lengths = [], [], [], []
    for key in ("chosen_ids", "rejected_ids"):
        for ex in examples:
            prompt, response = _ids(ex["prompt_ids"]), _ids(ex[key])
            seq = np.concatenate([prompt, response])
            label = np.concatenate([np.full(len(prompt), IGNORE_INDEX, dtype=np.int64), response])
            label[0] = IGNORE_INDEX
            ids.append(seq)
            labels.append(label)
            positions.append(np.arange(len(seq), dtype=np.int64))
            lengths.append(len(seq))
    batch = {"input_ids": torch.from_numpy(np.concatenate(ids))[None],
             "position_ids": torch.from_numpy(np.concatenate(positions))[None],
             "labels": torch.from_numpy(np.concatenate(labels))[None],
             "sequence_lengths": torch.tensor(lengths, dtype=torch.long)}
    return {**batch, **pair_extras(examples)}


class PackedPairCollator:
    """Picklable collator: pairs -> `pack_pairs` batches."""

    def __call__(self, examples: list[dict]) -> dict:
        return pack_pairs(examples)


def is_packed(batch: dict) -> bool:
    return "sequence_lengths" in batch


def packed_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probs [2B], labelled-token counts [2B]) of a `pack_pairs` batch under `model`."""
    lengths = batch["sequence_lengths"].to(batch["input_ids"].device)
    # Which of the 2B sequences each position of the row belongs to.
    sequence_index = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)[None]
    out = completion_logps(model, batch, sequence_index=sequence_index, num_sequences=len(lengths))
    return out.logps, out.counts
