"""Per-row features a card derives from a dataset batch: lengths, turns, margins, leading verbs.

Every feature is a function of one record batch, so features stream with the data.
Numeric features get histograms; string features (a leading verb) get top-k counts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Columns that hold text, ids or nested data: never treated as labels.
NOT_LABELS = frozenset({
    "id", "text", "url", "source", "raw_id", "raw", "system", "tools", "messages", "prompt", "chosen",
    "rejected", "response", "prompt_id", "warc_record_id", "http_headers", "instruction", "input",
    "output", "content", "title",
})


@dataclass(frozen=True)
class Feature:
    name: str
    columns: tuple[str, ...]  # dataset columns the feature reads
    compute: Callable[[pa.RecordBatch], pa.Array]
    text: bool = False  # True when the feature's values are texts to measure (chars, and tokens if asked)
    chars: bool = True  # False when another feature already counts this text's characters exactly


def _content_lengths_by_role(messages: pa.Array, role: str | None) -> pa.Array:
    """Sum of content characters per conversation, over turns with `role` (all turns when None)."""
    n = len(messages)
    flat = pc.list_flatten(messages)
    parents = pc.list_parent_indices(messages).to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.utf8_length(pc.struct_field(flat, "content")), 0).to_numpy(zero_copy_only=False)
    if role is not None:
        lengths = lengths * (pc.fill_null(pc.equal(pc.struct_field(flat, "role"), role), False)
                             .to_numpy(zero_copy_only=False))
    sums = np.bincount(parents, weights=lengths, minlength=n).astype(np.int64)
    return pa.array(sums, pa.int64(), mask=messages.is_null().to_numpy(zero_copy_only=False))


def _join_role_texts(messages: pa.Array, role: str) -> pa.Array:
    """One string per conversation: the contents of its `role` turns joined by newlines."""
    out = []
    for conv in messages.to_pylist():
        out.append(None if conv is None else "\n".join(t["content"] or "" for t in conv if t["role"] == role))
    return pa.array(out, pa.string())


def leading_word(texts: pa.Array) -> pa.Array:
    """Lower-cased first word of each text, punctuation stripped (the 'verb' of an instruction)."""
    trimmed = pc.utf8_lower(pc.utf8_trim_whitespace(texts))
    first = pc.list_element(pc.split_pattern_regex(trimmed, r"\s+", max_splits=1), 0)
    word = pc.replace_substring_regex(first, r"[^\w'-]+", "")
    return pc.if_else(pc.equal(word, ""), pa.scalar(None, pa.string()), word)


def _first_user_turn(messages: pa.Array) -> pa.Array:
    out = []
    for conv in messages.to_pylist():
        first = next((t["content"] for t in conv or [] if t["role"] == "user"), None)
        out.append(first)
    return pa.array(out, pa.string())


def _char_len(col: str) -> Feature:
    return Feature(f"{col}_chars", (col,), lambda b: pc.utf8_length(b.column(col)))


def features_for(kind: str, column_names: list[str], text_column: str | None) -> list[Feature]:
    """The derived features that make sense for a dataset of `kind` with these columns."""
    names = set(column_names)
    feats: list[Feature] = []
    if kind in ("sft",) and "messages" in names:
        feats += [
            Feature("turns", ("messages",), lambda b: pc.list_value_length(b.column("messages"))),
            Feature("prompt_chars", ("messages",), lambda b: _content_lengths_by_role(b.column("messages"), "user")),
            Feature("response_chars", ("messages",), lambda b: _content_lengths_by_role(b.column("messages"), "assistant")),
            # Joined turn texts only feed token counts: the joins add newlines the chars above do not count.
            Feature("prompt", ("messages",), lambda b: _join_role_texts(b.column("messages"), "user"), True, False),
            Feature("response", ("messages",), lambda b: _join_role_texts(b.column("messages"), "assistant"), True, False),
        ]
    if kind in ("preference", "prompt", "scored_sample") and "prompt" in names:
        feats += [
            Feature("prompt_turns", ("prompt",), lambda b: pc.list_value_length(b.column("prompt"))),
            Feature("prompt_chars", ("prompt",), lambda b: _content_lengths_by_role(b.column("prompt"), None)),
        ]
    if kind == "preference":
        feats += [Feature(c, (c,), lambda b, c=c: b.column(c), text=True) for c in ("chosen", "rejected") if c in names]
        if "margin" not in names and {"chosen_score", "rejected_score"} <= names:
            feats.append(Feature("score_margin", ("chosen_score", "rejected_score"),
                                 lambda b: pc.subtract(b.column("chosen_score"), b.column("rejected_score"))))
    if kind == "scored_sample" and "response" in names:
        feats.append(Feature("response", ("response",), lambda b: b.column("response"), text=True))
    if text_column and text_column in names:
        feats.append(Feature(text_column, (text_column,), lambda b: b.column(text_column), text=True))
    # Self-instruct output: the most common leading verbs of the instructions.
    if "instruction" in names:
        feats.append(Feature("instruction_leading_word", ("instruction",), lambda b: leading_word(b.column("instruction"))))
    elif "rouge_to_nearest_seed" in names and "messages" in names:
        feats.append(Feature("instruction_leading_word", ("messages",),
                             lambda b: leading_word(_first_user_turn(b.column("messages")))))
    return feats


def default_text_column(kind: str, column_names: list[str]) -> str | None:
    if "text" in column_names:
        return "text"
    if kind not in ("sft", "preference", "prompt", "scored_sample") and "instruction" in column_names:
        return "instruction"
    return None


def label_columns(schema: pa.Schema, text_column: str | None) -> list[str]:
    """Every column that is a label: numeric, boolean or string, and not text, id or nested data."""
    from schemas.card_stats import is_categorical, is_numeric

    out = []
    for f in schema:
        if f.name in NOT_LABELS or f.name == text_column or f.name.endswith("_id"):
            continue
        if is_numeric(f.type) or is_categorical(f.type):
            out.append(f.name)
    return out


def token_lengths(tokenizer, texts: pa.Array) -> pa.Array:
    """Token count of each text (null stays null) with a HF tokenizer, a `tokenizers.Tokenizer` or a callable."""
    values = texts.to_pylist()
    present = [v for v in values if v is not None]
    if hasattr(tokenizer, "encode_batch"):  # tokenizers.Tokenizer
        counts = [len(e.ids) for e in tokenizer.encode_batch(present, add_special_tokens=False)]
    elif callable(tokenizer):
        out = tokenizer(present, add_special_tokens=False) if hasattr(tokenizer, "convert_tokens_to_ids") else [tokenizer(t) for t in present]
        ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
        counts = [len(x) for x in ids]
    else:
        raise TypeError(f"tokenizer of type {type(tokenizer).__name__} is neither callable nor has encode_batch")
    it = iter(counts)
    return pa.array([None if v is None else next(it) for v in values], pa.int64())
