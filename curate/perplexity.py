"""Perplexity labels from a causal language model, scored in batches of token windows.

Labels
- `ppl`: exp(mean next-token negative log-likelihood) over the scored tokens, computed
  exactly (no approximation beyond the window context): every target token is scored
  once, with the tokens before it in its window as context.
- `ppl_tokens`: how many target tokens were scored.
- `ppl_status`: `scored`; `truncated` (only the first `max_tokens` tokens were scored);
  `empty` (fewer than two tokens: nothing to predict, `ppl` null); `unmappable` (more
  than `max_unmappable_ratio` of the examined tokens, those of the head that is tokenized
  when `max_tokens` cuts a long text, are the tokenizer's unknown token or U+FFFD
  replacement characters; `ppl` null, and the row is dropped as `ppl_unmappable` when
  `drop_unmappable`).

A document longer than the model's window is scored with strided windows (the
Hugging Face "perplexity of fixed-length models" recipe): a window of `window` tokens
moves `stride` tokens at a time and scores only its new tokens, so each token keeps at
least `window - stride` tokens of context. Windows of all documents in a batch are sorted
by length and run `batch_size` at a time (and at most `batch_tokens` padded tokens) with
right padding (causal attention never sees the padding, so padded and unpadded scores agree).

What batching buys depends on the device. On one CPU core the embedded reference LM (64
wide, 2 layers) already runs its matrix products near the core's FMA peak one document at
a time, so batching removes only the per-call overhead (tokenizer and module calls):
bench_perplexity.py measures about 1.3-1.5x, not more, and only with passes kept
cache-sized (`batch_tokens`, sliced output projection; unbounded batches of 16 were
slower than one document per call on long texts). On a GPU, where a small pass is all
launch overhead, wide batches are what pays.

Cost is bounded per document by `max_tokens` (the default job scores the head of each
document, as CCNet's sampling does; only a head of a long text is tokenized, with the
same tokens as the whole text's first ones: `_encode`); `max_tokens: null` scores the whole
text.

Plugging a real model: `perplexity.model_path` takes any local Hugging Face causal-LM
directory (or hub id the nodes can load), e.g. a 0.5B Qwen model with `device: cuda`,
`dtype: bfloat16`, `window: 2048`, `batch_size: 32` on GPU nodes (`runtime.actor_cpus`
stays the CPU share; give the actors a GPU through Ray's resources when scheduling).
A KenLM model file (`.arpa`, `.bin`) scores the CCNet way instead: curate.kenlm_scorer.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from curate.kenlm_scorer import KenLMScorer, is_kenlm_model, kenlm_available
from curate.stage import Stage, mark_drops, set_column

SCORED, TRUNCATED, EMPTY, UNMAPPABLE = "scored", "truncated", "empty", "unmappable"
UNMAPPABLE_REASON = "ppl_unmappable"
LABEL_TYPES = {"ppl": pa.float64(), "ppl_tokens": pa.int64(), "ppl_status": pa.string()}
MAX_LOG_PPL = 50.0  # exp() overflow guard; a real text never gets near it
CPU_BATCH_TOKENS = 1024  # default padded tokens per forward pass on CPU (PerplexityConfig.batch_tokens)
CPU_HEAD_ROWS = 512  # target rows per output-projection slice on CPU (see _window_nll)
HEAD_CHARS_PER_TOKEN = 8  # characters of a long text tokenized per scored token (see _encode)


@dataclass(frozen=True)
class PerplexityConfig:
    model_path: str = "reference"  # a causal-LM directory; `reference` = the embedded reference LM
    max_tokens: int | None = 256  # tokens of each document's head that are scored; null = all
    window: int | None = None  # tokens per forward pass; null = min(1024, the model's positions)
    stride: int | None = None  # new tokens per window after the first; null = window // 2
    batch_size: int = 16  # windows per forward pass (at most)
    # Padded tokens per forward pass (at most; a longer window runs alone). null = 1024 on CPU,
    # where a small model is fastest with its activations in cache (bench_perplexity.py), and
    # no token limit on other devices (a GPU wants the widest batch that fits).
    batch_tokens: int | None = None
    threads: int | None = 1  # torch threads per actor (null = torch's default)
    device: str = "cpu"
    dtype: str | None = None  # e.g. bfloat16 on GPU; null = the model's own
    max_unmappable_ratio: float = 0.1
    drop_unmappable: bool = True
    text_column: str = "text"

    def __post_init__(self) -> None:
        for name, least in (("max_tokens", 2), ("window", 2), ("stride", 1), ("batch_tokens", 2)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ValueError(f"perplexity.{name} must be an integer >= {least} or null, got {value!r}")
        if self.window and self.stride and self.stride > self.window:
            raise ValueError(f"perplexity.stride ({self.stride}) must not exceed perplexity.window ({self.window})")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"perplexity.batch_size must be a positive integer, got {self.batch_size!r}")
        if not 0.0 <= self.max_unmappable_ratio <= 1.0:
            raise ValueError(f"perplexity.max_unmappable_ratio must be in [0, 1], got {self.max_unmappable_ratio!r}")
        if is_kenlm_model(self.model_path) and not kenlm_available():
            raise ValueError(f"perplexity.model_path {self.model_path} is a KenLM model, but the kenlm package "
                             "is not installed (pip install kenlm)")


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


def _stable_tokens(encoded, k: int) -> int:
    """How many leading tokens of text `k` of a batch encoding (of a cut head) come before its
    last two pre-tokens; 0 without word ids (a slow tokenizer, or no pre-tokenizer)."""
    try:
        words = encoded.word_ids(k)
    except (ValueError, AttributeError):
        return 0
    if not words or None in words:
        return 0
    return bisect.bisect_left(words, words[-1] - 1)  # word ids rise along the tokens


class PerplexityStage(Stage):
    name = "perplexity"
    needs_actor = True

    def __init__(self, config: PerplexityConfig | None = None):
        self.config = config = config or PerplexityConfig()
        # A KenLM model file (CCNet's scorer) replaces the neural LM: same labels, no torch.
        self.kenlm = KenLMScorer(config) if is_kenlm_model(config.model_path) else None
        if self.kenlm is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

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
        on_cpu = str(config.device).startswith("cpu")
        self.batch_tokens = config.batch_tokens or (CPU_BATCH_TOKENS if on_cpu else None)
        # Target rows per output-projection slice: cache-sized logits on CPU; on a GPU the
        # slice only bounds the [rows, vocab] logits' memory (8192 x 150k fp32 = 4.9 GB).
        self.head_rows = CPU_HEAD_ROWS if on_cpu else 8192
        self.unk_id = self.tokenizer.unk_token_id

    def __getstate__(self) -> dict:
        return {"config": self.config}  # ship the settings; the model reloads where unpickled

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["config"])

    # ------------------------------------------------------------ scoring

    def _batches(self, jobs: list[tuple[int, list[int], int]]) -> list[list[tuple[int, list[int], int]]]:
        """Group windows (sorted by length) into forward passes of at most `batch_size` rows
        and, where a token budget applies, at most that many padded tokens."""
        budget = self.batch_tokens
        batches, current = [], []
        for job in jobs:  # ascending length: the newest window sets the padded width
            if current and (len(current) == self.config.batch_size
                            or (budget and (len(current) + 1) * len(job[1]) > budget)):
                batches.append(current)
                current = []
            current.append(job)
        if current:
            batches.append(current)
        return batches

    def token_nll(self, sequences: list[list[int]]) -> list[tuple[float, int]]:
        """(sum of target NLL, targets) per token sequence, batched over windows."""
        jobs = []  # (sequence index, window token ids, index of the first target inside the window)
        for i, ids in enumerate(sequences):
            for begin, end, first in windows(len(ids), self.window, self.stride):
                jobs.append((i, ids[begin:end], first - begin))
        jobs.sort(key=lambda j: len(j[1]))  # similar lengths together: little padding
        totals = [0.0] * len(sequences)
        counts = [0] * len(sequences)
        for chunk in self._batches(jobs):
            for (i, ids, first), total in zip(chunk, self._window_nll(chunk)):
                totals[i] += total
                counts[i] += len(ids) - first
        return list(zip(totals, counts))

    def _window_nll(self, chunk: list[tuple[int, list[int], int]]) -> list[float]:
        """Summed target NLL per window of one forward pass (windows right-padded).

        Only the hidden states that predict a target reach the output projection, in slices
        of `head_rows`: padding and the context-only head of later windows never enter the
        vocabulary-sized matmul (most of a small model's cost), and each slice's logits stay
        in cache for the cross-entropy that reads them (the unsliced [targets, vocab] logits
        of 16 windows are ~20 MB: measured 0.068 s against 0.047 s in 512-row slices for the
        bench's 15.6k targets). Models whose logits need more than the output projection
        (e.g. soft-capping) take the plain full-logits path.
        """
        torch = self.torch
        width = max(len(ids) for _, ids, _ in chunk)
        ids = torch.tensor([w + [self.pad_id] * (width - len(w)) for _, w, _ in chunk], dtype=torch.long)
        lengths = torch.tensor([len(w) for _, w, _ in chunk])
        firsts = torch.tensor([first for _, _, first in chunk])
        # Logits at position p - 1 predict token p: targets first..len-1 read positions first-1..len-2.
        positions = torch.arange(width - 1)
        select = (positions >= (firsts - 1)[:, None]) & (positions < (lengths - 1)[:, None])
        ids = ids.to(self.config.device)
        select_dev = select.to(self.config.device)
        targets = ids[:, 1:][select_dev]
        head = self.model.get_output_embeddings()
        with torch.inference_mode():
            # Right padding under causal attention: no real token attends to a later (padding)
            # position, so no mask is needed, and without one the attention takes its fast
            # causal path (with a padding mask it is several times slower on CPU).
            if head is not None and not getattr(self.model.config, "final_logit_softcapping", None):
                hidden = self.model.base_model(input_ids=ids, use_cache=False).last_hidden_state[:, :-1][select_dev]
                pieces = [torch.nn.functional.cross_entropy(head(hidden[s:s + self.head_rows]).float(),
                                                            targets[s:s + self.head_rows], reduction="none")
                          for s in range(0, hidden.shape[0], self.head_rows)]
                nll = torch.cat(pieces) if pieces else hidden.new_zeros(0)
            else:
                logits = self.model(input_ids=ids, use_cache=False).logits[:, :-1][select_dev]
                nll = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
        # Targets are in row-major order: sum each window's run in float64.
        rows = torch.arange(len(chunk)).repeat_interleave(select.sum(dim=1))
        sums = torch.zeros(len(chunk), dtype=torch.float64).index_add_(0, rows, nll.cpu().double())
        return sums.tolist()

    def _encode(self, texts: list[str]) -> list[tuple[list[int], bool, float]]:
        """Per text: the token ids to score (at most `max_tokens`), whether the text has more
        tokens than that, and the unmappable share of the examined tokens.

        With `max_tokens` set, only a head of a long text is tokenized: tokenizing a whole web
        page to score its first 256 tokens cost more than the scoring (a median page of
        ../shared/data/web_zh is ~2,500 characters, several thousand byte-level tokens). The
        head is the first `HEAD_CHARS_PER_TOKEN * max_tokens` characters, and the tokens of
        its last two pre-tokens (a fast tokenizer's word ids) are not used: the cut may have
        split or changed them, while the tokenizer model runs on each pre-token alone, so the
        tokens before them are the whole text's first tokens. A head that leaves too few
        tokens (or a tokenizer without word ids) means the text is tokenized whole. The
        unmappable share is then that of the head, the part that is scored.
        """
        cap = self.config.max_tokens
        limit = cap * HEAD_CHARS_PER_TOKEN if cap else None
        heads = [t[:limit] for t in texts] if limit else texts
        encoded = self.tokenizer(heads, add_special_tokens=False)
        results: list[tuple[list[int], bool, float] | None] = [None] * len(texts)
        whole = []  # texts whose head was not enough
        for k, (text, head, ids) in enumerate(zip(texts, heads, encoded["input_ids"])):
            if len(head) == len(text):
                results[k] = self._head(ids, ids, text)
            elif (stable := _stable_tokens(encoded, k)) > cap:
                results[k] = self._head(ids[:stable], ids, head)
            else:
                whole.append(k)
        if whole:
            for k, ids in zip(whole, self.tokenizer([texts[k] for k in whole], add_special_tokens=False)["input_ids"]):
                results[k] = self._head(ids, ids, texts[k])
        return results

    def _head(self, ids: list[int], examined: list[int], text: str) -> tuple[list[int], bool, float]:
        """(ids to score, more than max_tokens, unmappable share of `examined` tokens of `text`)."""
        cap = self.config.max_tokens
        bad = (examined.count(self.unk_id) if self.unk_id is not None else 0) + text.count("\ufffd")
        return (ids[:cap] if cap else ids), bool(cap) and len(ids) > cap, bad / max(1, len(examined))

    def score(self, texts: list[str]) -> tuple[list[float | None], list[int], list[str]]:
        """ppl, scored targets and status per text."""
        if self.kenlm is not None:
            return self.kenlm.score(texts)
        encoded = self._encode([t or "" for t in texts]) if texts else []
        status, sequences = [], []
        for ids, more, unmappable in encoded:
            if len(ids) < 2:
                status.append(EMPTY)
            elif unmappable > self.config.max_unmappable_ratio:
                status.append(UNMAPPABLE)
            else:
                status.append(TRUNCATED if more else SCORED)
            sequences.append(ids)
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
