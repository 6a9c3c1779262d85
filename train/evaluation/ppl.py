"""Perplexity and bits per byte of held-out text, with strided windows.

A document longer than the model's window is scored in windows of at most `max_length`
tokens. The first window scores its tokens 1..max_length-1; each later one scores the next
`stride` tokens and feeds the `max_length` tokens that end with them, so every token is
scored exactly once and (after the first window) with at least `max_length - stride`
tokens of context. stride = max_length - 1 is plain chunking (one token of overlap, the
context of the chunk's first token); a small stride gives every token nearly a full window
of context, at more compute.

Every document starts with a prefix token (BOS, else EOS, the usual document separator), so
its first real token is scored too and bits per byte covers every byte of the text:
    perplexity    = exp(sum of token NLLs / tokens scored)
    bits per byte = sum of token NLLs / ln 2 / UTF-8 bytes of the text
Bits per byte compares models with different tokenizers; perplexity does not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from train.evaluation.runtime import ModelActor, RuntimeOptions


@dataclass
class PerplexityOptions(RuntimeOptions):
    data: list[str] = field(default_factory=list)
    text_column: str = "text"
    max_length: int = 512        # tokens per window, prefix included
    stride: int = 256            # new tokens scored per window after the first (< max_length)
    max_documents: int | None = None
    windows_per_forward: int = 8  # windows stacked (right-padded) into one forward pass

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.data, str):
            self.data = [self.data]
        if self.max_length < 2:
            raise ValueError(f"ppl: max_length must be >= 2, got {self.max_length}")
        if not 1 <= self.stride < self.max_length:
            raise ValueError(f"ppl: stride must be in 1..max_length-1 ({self.max_length - 1}), got {self.stride}")
        if self.windows_per_forward < 1:
            raise ValueError("ppl: windows_per_forward must be >= 1")


@dataclass(frozen=True)
class Window:
    begin: int         # first token fed to the model
    end: int           # one past the last token fed
    first_target: int  # first token whose NLL this window contributes


def strided_windows(n_tokens: int, max_length: int, stride: int) -> list[Window]:
    """Windows over a sequence whose token 0 is the prefix (never a target): each token 1..n-1
    is the target of exactly one window, and every window feeds at least one token before
    its first target."""
    if n_tokens < 2:
        return []
    end = min(max_length, n_tokens)
    windows = [Window(0, end, 1)]
    while end < n_tokens:
        first, end = end, min(end + stride, n_tokens)
        windows.append(Window(max(0, end - max_length), end, first))
    return windows


def prefix_token_id(tokenizer) -> int | None:
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return None


def document_ids(tokenizer, text: str) -> tuple[list[int], int]:
    """(prefix + token ids of the text, UTF-8 bytes the scored tokens cover)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n_bytes = len(text.encode("utf-8"))
    prefix = prefix_token_id(tokenizer)
    if prefix is None:
        # No BOS/EOS to condition on: the first token is context only, its bytes are not scored.
        first = tokenizer.decode(ids[:1])
        return ids, max(0, n_bytes - len(first.encode("utf-8")))
    return [prefix] + ids, n_bytes


def window_nlls(model, sequences: Sequence[Sequence[int]], windows: Sequence[Window], pad_id: int,
                windows_per_forward: int) -> list[float]:
    """Summed NLL (nats) of each window's targets; `windows[i]` cuts `sequences[i]`. Windows
    are right-padded into batches: with causal attention, padding after a token cannot change it."""
    import torch

    device = next(model.parameters()).device
    out = [0.0] * len(windows)
    order = sorted(range(len(windows)), key=lambda i: windows[i].end - windows[i].begin)
    for start in range(0, len(order), windows_per_forward):
        chunk = order[start:start + windows_per_forward]
        pieces = [list(sequences[i][windows[i].begin:windows[i].end]) for i in chunk]
        width = max(len(p) for p in pieces)
        ids = torch.tensor([p + [pad_id] * (width - len(p)) for p in pieces], device=device)
        mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in pieces], device=device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        for row, i in enumerate(chunk):
            w = windows[i]
            targets = torch.arange(w.first_target, w.end, device=device) - w.begin
            token_lp = logprobs[row, targets - 1].gather(-1, ids[row, targets].unsqueeze(-1)).squeeze(-1)
            out[i] = float(-token_lp.sum())
    return out


def score_documents(model, tokenizer, texts: Iterable[str], max_length: int, stride: int,
                    windows_per_forward: int = 8) -> list[dict[str, Any]]:
    """Per document: tokens scored, bytes, summed NLL in nats (no Ray: the batch function)."""
    texts = list(texts)
    encoded = [document_ids(tokenizer, t) if t and t.strip() else ([], 0) for t in texts]
    seq_of, windows = [], []
    for doc, (ids, _) in enumerate(encoded):
        for w in strided_windows(len(ids), max_length, stride):
            seq_of.append(doc)
            windows.append(w)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    nlls = window_nlls(model, [encoded[d][0] for d in seq_of], windows, pad, windows_per_forward)
    rows = [{"tokens": max(0, len(ids) - 1), "bytes": n_bytes, "nll": 0.0, "windows": 0} for ids, n_bytes in encoded]
    for doc, nll in zip(seq_of, nlls):
        rows[doc]["nll"] += nll
        rows[doc]["windows"] += 1
    return rows


class PerplexityScorer(ModelActor):
    """Ray Data actor: one model, per-document NLL for each batch of texts."""

    def __init__(self, model, dtype: str, threads: float, text_column: str, max_length: int, stride: int,
                 windows_per_forward: int):
        super().__init__(model, dtype, threads)
        self.text_column, self.max_length, self.stride = text_column, max_length, stride
        self.windows_per_forward = windows_per_forward

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = ["" if t is None else str(t) for t in batch[self.text_column]]
        rows = score_documents(self.model, self.tokenizer, texts, self.max_length, self.stride, self.windows_per_forward)
        return {
            "tokens": np.array([r["tokens"] for r in rows], dtype=np.int64),
            "bytes": np.array([r["bytes"] for r in rows], dtype=np.int64),
            "nll": np.array([r["nll"] for r in rows], dtype=np.float64),
            "windows": np.array([r["windows"] for r in rows], dtype=np.int64),
        }


def summarize(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Corpus-level metrics: token-weighted, so long documents count for their length."""
    documents = empty = tokens = n_bytes = 0
    nll = 0.0
    for r in rows:
        documents += 1
        if r["tokens"] == 0:
            empty += 1
            continue
        tokens, n_bytes, nll = tokens + int(r["tokens"]), n_bytes + int(r["bytes"]), nll + float(r["nll"])
    if tokens == 0:
        raise ValueError("ppl: every document is empty; nothing to score")
    return {"perplexity": math.exp(nll / tokens), "bits_per_byte": nll / math.log(2) / max(n_bytes, 1),
            "nll_per_token": nll / tokens, "tokens": tokens, "bytes": n_bytes, "documents": documents,
            "empty_documents": empty}


def check_inputs(options: PerplexityOptions) -> list:
    """Files and the text column, before Ray starts."""
    from train.evaluation.inputs import data_files, require_columns

    files = data_files(options.data, "ppl")
    require_columns(files, [options.text_column], "ppl")
    return files


def run_perplexity(model, options: PerplexityOptions) -> tuple[dict[str, Any], "pa.Table"]:
    """(metrics, per-document table) on Ray Data; `model` is a train.run_models.ResolvedModel."""
    import pyarrow as pa

    from train.evaluation.inputs import read_dataset
    from train.evaluation.runtime import actor_pool_args

    files = check_inputs(options)
    ds = read_dataset(files, [options.text_column])
    if options.max_documents:
        ds = ds.limit(options.max_documents)
    kwargs = {"model": model, "dtype": options.dtype, "threads": options.num_cpus or 1,
              "text_column": options.text_column, "max_length": options.max_length, "stride": options.stride,
              "windows_per_forward": options.windows_per_forward}
    scored = ds.map_batches(PerplexityScorer, batch_format="numpy", **actor_pool_args(options, kwargs))
    tables = [pa.Table.from_pydict({k: list(v) for k, v in b.items()}) for b in scored.iter_batches(batch_format="numpy")]
    table = pa.concat_tables(tables) if tables else pa.table({"tokens": [], "bytes": [], "nll": [], "windows": []})
    metrics = summarize(table.to_pylist())
    metrics.update({"max_length": options.max_length, "stride": options.stride})
    return metrics, table
