"""Collate functions: packed rows -> model inputs.

`flatten_collate` puts a whole batch into one [1, total] sequence with restarting
position_ids and no attention_mask. transformers 5.x then isolates the examples by
itself: `masking_utils._preprocess_mask_arguments` calls `find_packed_sequence_indices`
on position_ids when attention_mask is None and there is no cache, and ANDs the
resulting same-sequence mask into the causal mask for SDPA / eager / flex; the
flash-attention path derives cu_seqlens from the same position_ids. So the model must
run with `use_cache=False` (a cache disables the detection).

`padded_collate` is the unpacked baseline (pad to the longest row, attention_mask), and
`block_diagonal_mask` builds an explicit 4-D mask for models or kernels that need one.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from train.tokenize import IGNORE_INDEX

try:  # Ray >= 2.47 wants collate functions as classes; plain functions still work, with a warning.
    from ray.data.collate_fn import NumpyBatchCollateFn as _RayCollateBase
except ImportError:  # pragma: no cover - Ray is a dependency, but collate works without it
    _RayCollateBase = object

FIELDS = ("input_ids", "labels", "position_ids")


def _rows(batch: Any) -> list[dict[str, np.ndarray]]:
    """Rows from a list of dicts or a dict of columns (what Ray's iterators hand out)."""
    if isinstance(batch, Mapping):
        n = len(batch["input_ids"])
        return [{k: np.asarray(batch[k][i]) for k in FIELDS if k in batch} for i in range(n)]
    return [{k: np.asarray(r[k]) for k in FIELDS if k in r} for r in batch]


def _position_ids(row: dict[str, np.ndarray]) -> np.ndarray:
    return row["position_ids"] if "position_ids" in row else np.arange(len(row["input_ids"]))


def flatten_collate(batch: Any) -> dict[str, torch.Tensor]:
    """One [1, total] sequence: input_ids, labels, position_ids; no attention_mask.

    Labels at every example start (position 0) are set to -100, so no loss term
    predicts one example's first token from the previous example's last token."""
    rows = _rows(batch)
    if not rows:
        raise ValueError("flatten_collate got an empty batch")
    input_ids = np.concatenate([r["input_ids"] for r in rows]).astype(np.int64)
    position_ids = np.concatenate([_position_ids(r) for r in rows]).astype(np.int64)
    labels = np.concatenate([r.get("labels", r["input_ids"]) for r in rows]).astype(np.int64)
    labels[position_ids == 0] = IGNORE_INDEX
    return {
        "input_ids": torch.from_numpy(input_ids)[None],
        "labels": torch.from_numpy(labels)[None],
        "position_ids": torch.from_numpy(position_ids)[None],
    }


class FlattenCollate(_RayCollateBase):
    """`flatten_collate` as the collate class Ray's `iter_torch_batches(collate_fn=...)` prefers."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return flatten_collate(batch)


def block_diagonal_mask(position_ids: torch.Tensor, valid: torch.Tensor | None = None,
                        dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """[B, 1, L, L] causal mask that only lets a token see earlier tokens of its own example.

    Examples are delimited by position_ids restarting at 0. bool: True = may attend
    (for SDPA); a float dtype gives the additive form (0 / most negative) for eager."""
    segment = (position_ids == 0).cumsum(-1)
    same = segment[:, :, None] == segment[:, None, :]
    length = position_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=position_ids.device).tril()
    mask = same & causal
    if valid is not None:
        mask = mask & valid[:, None, :].bool() & valid[:, :, None].bool()
        # Padding rows must still see something, or softmax yields NaN; let them see themselves.
        mask = mask | torch.eye(length, dtype=torch.bool, device=position_ids.device)
    mask = mask[:, None]
    if dtype == torch.bool:
        return mask
    out = torch.zeros(mask.shape, dtype=dtype, device=position_ids.device)
    return out.masked_fill(~mask, torch.finfo(dtype).min)


def padded_collate(batch: Any, pad_token_id: int = 0, block_diagonal: bool = False,
                   pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """Pad rows to the longest: input_ids, labels (-100 on padding), position_ids, and
    attention_mask — [B, L] for one example per row, or [B, 1, L, L] block-diagonal
    (`block_diagonal=True`) for packed rows."""
    rows = _rows(batch)
    if not rows:
        raise ValueError("padded_collate got an empty batch")
    longest = max(len(r["input_ids"]) for r in rows)
    if pad_to_multiple_of:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    n = len(rows)
    input_ids = torch.full((n, longest), pad_token_id, dtype=torch.long)
    labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((n, longest), dtype=torch.long)
    valid = torch.zeros((n, longest), dtype=torch.long)
    for i, r in enumerate(rows):
        k = len(r["input_ids"])
        pos = torch.as_tensor(_position_ids(r), dtype=torch.long)
        lab = torch.as_tensor(r.get("labels", r["input_ids"]), dtype=torch.long).clone()
        lab[pos == 0] = IGNORE_INDEX
        input_ids[i, :k] = torch.as_tensor(r["input_ids"], dtype=torch.long)
        labels[i, :k] = lab
        position_ids[i, :k] = pos
        # Padding continues the positions so no spurious example start appears there.
        position_ids[i, k:] = torch.arange(longest - k) + (int(pos[-1]) + 1 if k else 0)
        valid[i, :k] = 1
    out = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
    out["attention_mask"] = block_diagonal_mask(position_ids, valid) if block_diagonal else valid
    return out
