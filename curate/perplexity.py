"""Perplexity labels from a causal language model, scored in batches of token windows.

Labels
- `ppl`: exp(mean next-token negative log-likelihood) over the scored tokens, computed
  exactly (no approximation beyond the window context): every target token is scored
  once, with the tokens before it in its window as context.
- `ppl_tokens`: how many target tokens were scored.
- `ppl_status`: `scored`; `truncated` (only the first `max_tokens` tokens were scored);
  `empty` (fewer than two tokens: nothing to predict, `ppl` null); `unmappable` (more
  than `max_unmappable_ratio` of the tokens are the tokenizer's unknown token or U+FFFD
  replacement characters; `ppl` null, and the row is dropped as `ppl_unmappable` when
  `drop_unmappable`).

A document longer than the model's window is scored with strided windows (the
Hugging Face "perplexity of fixed-length models" recipe): a window of `window` tokens
moves `stride` tokens at a time and scores only its new tokens, so each token keeps at
least `window - stride` tokens of context. Windows of all documents in a batch are sorted
by length and run `batch_size` at a time with right padding (causal attention never sees
the padding, so padded and unpadded scores agree).

Cost is bounded per document by `max_tokens` (the default job scores the head of each
document, as CCNet's sampling does); `max_tokens: null` scores the whole text.

Plugging a real model: `perplexity.model_path` takes any local Hugging Face causal-LM
directory (or hub id the nodes can load), e.g. a 0.5B Qwen model with `device: cuda`,
`dtype: bfloat16`, `window: 2048`, `batch_size: 32` on GPU nodes (`runtime.actor_cpus`
stays the CPU share; give the actors a GPU through Ray's resources when scheduling).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from curate.stage import Stage, mark_drops, set_column

SCORED, TRUNCATED, EMPTY, UNMAPPABLE = "scored", "truncated", "empty", "unmappable"
UNMAPPABLE_REASON = "ppl_unmappable"
LABEL_TYPES = {"ppl": pa.float64(), "ppl_tokens": pa.int64(), "ppl_status": pa.string()}
MAX_LOG_PPL = 50.0  # exp() overflow guard; a real text never gets near it


@dataclass(frozen=True)
class PerplexityConfig:
    model_path: str = "reference"  # a causal-LM directory; `reference` = the embedded reference LM
    max_tokens: int | None = 256  # tokens of each document's head that are scored; null = all
    window: int | None = None  # tokens per forward pass; null = min(1024, the model's positions)
    stride: int | None = None  # new tokens per window after the first; null = window // 2
    batch_size: int = 16  # windows per forward pass
    threads: int | None = 1  # torch threads per actor (null = torch's default)
    device: str = "cpu"
    dtype: str | None = None  # e.g. bfloat16 on GPU; null = the model's own
    max_unmappable_ratio: float = 0.1
    drop_unmappable: bool = True
    text_column: str = "text"

    def __post_init__(self) -> None:
        for name, least in (("max_tokens", 2), ("window", 2), ("stride", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ValueError(f"perplexity.{name} must be an integer >= {least} or null, got {value!r}")
        if self.window and self.stride and self.stride > self.window:
            raise ValueError(f"perplexity.stride ({self.stride}) must not exceed perplexity.window ({self.window})")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"perplexity.batch_size must be a positive integer, got {self.batch_size!r}")
        if not 0.0 <= self.max_unmappable_ratio <= 1.0:
            raise ValueError(f"perplexity.max_unmappable_ratio must be in [0, 1], got {self.max_unmappable_ratio!r}")


def windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first_target) spans covering targets 1..n_tokens-1 exactly once.

    The first window scores every token it holds but the first; each later window starts
    `window - stride` tokens before the previous end, so its first scored token has that
    much context.
    """
    spans, begin, next_target = [], 0, 1
    while next_target < n_tokens:
        end = min(begin + window, n_tokens)
        spans.append((begin, end, next_target))
        next_target = end
        begin = max(0, end - window + stride)
    return spans


class PerplexityStage(Stage):
    name = "perplexity"
    needs_actor = True

    def __init__(self, config: PerplexityConfig | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config = config or PerplexityConfig()
        if config.threads:
            torch.set_num_threads(config.threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(config.model_path)
        kwargs = {"dtype": getattr(torch, config.dtype)} if config.dtype else {}
        self.model = AutoModelForCausalLM.from_pretrained(config.model_path, **kwargs).to(config.device).eval()
        positions = getattr(self.model.config, "max_position_embeddings", None) or 1024
        self.window = config.window or min(1024, positions)
        self.stride = config.stride or max(1, self.window // 2)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.unk_id = self.tokenizer.unk_token_id

    def __getstate__(self) -> dict:
        return {"config": self.config}  # ship the settings; the model reloads where unpickled

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["config"])

    # ------------------------------------------------------------ scoring

    def token_nll(self, sequences: list[list[int]]) -> list[tuple[float, int]]:
        """(sum of target NLL, targets) per token sequence, batched over windows."""
        torch = self.torch
        jobs = []  # (sequence index, window token ids, index of the first target inside the window)
        for i, ids in enumerate(sequences):
            for begin, end, first in windows(len(ids), self.window, self.stride):
                jobs.append((i, ids[begin:end], first - begin))
        totals = [[0.0, 0] for _ in sequences]
        jobs.sort(key=lambda j: len(j[1]))  # similar lengths together: little padding
        for start in range(0, len(jobs), self.config.batch_size):
            chunk = jobs[start:start + self.config.batch_size]
            width = max(len(ids) for _, ids, _ in chunk)
            input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            target_mask = torch.zeros((len(chunk), width - 1), dtype=torch.bool)
            for row, (_, ids, first) in enumerate(chunk):
                input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
                attention[row, :len(ids)] = 1
                target_mask[row, first - 1:len(ids) - 1] = True  # logits at p-1 predict token p
            nll = self._target_nll(input_ids, attention, target_mask)
            sums, counts = nll.sum(dim=1).tolist(), target_mask.sum(dim=1).tolist()
            for row, (i, _, _) in enumerate(chunk):
                totals[i][0] += sums[row]
                totals[i][1] += int(counts[row])
        return [(s, c) for s, c in totals]

    def _target_nll(self, input_ids, attention, target_mask):
        """NLL at the target positions only ([rows, width - 1], zero elsewhere).

        The output projection runs only on the hidden states that predict a target: padding
        and the context-only head of later windows never reach the vocabulary-sized matmul,
        which is most of a small model's cost. Models whose logits need more than the output
        projection (e.g. soft-capping) take the plain full-logits path.
        """
        torch = self.torch
        device = self.config.device
        ids = input_ids.to(device)
        # Right padding under causal attention: no real token attends to a later (padding)
        # position, so no mask is needed, and without one the attention takes its fast
        # causal path (with a padding mask it is several times slower on CPU).
        mask = None
        select = target_mask.to(device)
        head = self.model.get_output_embeddings()
        with torch.no_grad():
            if head is not None and not getattr(self.model.config, "final_logit_softcapping", None):
                hidden = self.model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
                logits = head(hidden[select])
            else:
                logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1][select]
            picked = torch.nn.functional.cross_entropy(logits.float(), ids[:, 1:][select], reduction="none")
        nll = torch.zeros(target_mask.shape, dtype=torch.float32)
        nll[target_mask] = picked.cpu()
        return nll

    def score(self, texts: list[str]) -> tuple[list[float | None], list[int], list[str]]:
        """ppl, scored targets and status per text."""
        encoded = self.tokenizer([t or "" for t in texts], add_special_tokens=False)["input_ids"] if texts else []
        status, sequences = [], []
        cap = self.config.max_tokens
        for text, ids in zip(texts, encoded):
            bad = sum(1 for t in ids if t == self.unk_id) + (text or "").count("\ufffd")
            if len(ids) < 2:
                status.append(EMPTY)
            elif bad / max(1, len(ids)) > self.config.max_unmappable_ratio:
                status.append(UNMAPPABLE)
            else:
                status.append(TRUNCATED if cap and len(ids) > cap else SCORED)
            sequences.append(ids[:cap] if cap else ids)
        todo = [i for i, s in enumerate(status) if s in (SCORED, TRUNCATED)]
        results = self.token_nll([sequences[i] for i in todo])
        ppl: list[float | None] = [None] * len(texts)
        tokens = [0] * len(texts)
        for i, (total, count) in zip(todo, results):
            ppl[i] = math.exp(min(MAX_LOG_PPL, total / count))
            tokens[i] = count
        return ppl, tokens, status

    def process(self, table: pa.Table) -> pa.Table:
        texts = table.column(self.config.text_column).to_pylist() if table.num_rows else []
        ppl, tokens, status = self.score(texts)
        table = set_column(table, "ppl", pa.array(ppl, pa.float64()))
        table = set_column(table, "ppl_tokens", pa.array(tokens, pa.int64()))
        table = set_column(table, "ppl_status", pa.array(status, pa.string()))
        if self.config.drop_unmappable and UNMAPPABLE in status:
            table = mark_drops(table, pc.equal(table.column("ppl_status"), UNMAPPABLE), UNMAPPABLE_REASON, self.name)
        return table
