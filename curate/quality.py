"""Perplexity and a quality score from a causal language model (any local HF model path).

Labels
- `ppl`: exp(mean next-token negative log-likelihood) over the first `max_tokens`
  tokens of the text (null for empty text).
- `quality_score` in [0, 1]: 1 - ln(ppl) / ln(vocab_size), clipped. 0 means "no better
  than guessing uniformly over the vocabulary", 1 a perfectly predicted text; unlike
  raw perplexity it is comparable across models with different vocabularies.

The model loads once per actor (`needs_actor`); only the head of each document is
scored so the cost per document is bounded. Off by default: the job passes a model
path (e.g. the project's tiny model) and enables it.
"""
from __future__ import annotations

import math

import pyarrow as pa

from curate.stage import Stage, set_column


class QualityStage(Stage):
    name = "quality"
    needs_actor = True

    def __init__(self, model_path: str | None = None, max_tokens: int = 256, batch_size: int = 8,
                 text_column: str = "text", threads: int | None = 1):
        if not model_path:
            raise ValueError("quality.model_path is required when the quality stage is enabled "
                             "(a local Hugging Face causal LM directory)")
        self._args = dict(model_path=str(model_path), max_tokens=max_tokens, batch_size=batch_size,
                          text_column=text_column, threads=threads)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path).eval()
        self.max_tokens, self.batch_size, self.text_column = max_tokens, batch_size, text_column
        self.log_vocab = math.log(max(2, len(self.tokenizer)))

    def __getstate__(self) -> dict:
        return self._args  # ship the settings, reload the model where unpickled

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def perplexities(self, texts: list[str]) -> list[float | None]:
        torch = self.torch
        out: list[float | None] = [None] * len(texts)
        todo = [i for i, t in enumerate(texts) if t and t.strip()]
        for start in range(0, len(todo), self.batch_size):
            idx = todo[start:start + self.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_tokens)
            with torch.no_grad():
                logits = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            targets = enc["input_ids"][:, 1:]
            mask = enc["attention_mask"][:, 1:].float()
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2).float(), targets, reduction="none")
            counts = mask.sum(dim=1)
            mean = (nll * mask).sum(dim=1) / counts.clamp(min=1)
            for j, i in enumerate(idx):
                out[i] = float(math.exp(min(50.0, mean[j].item()))) if counts[j] > 0 else None
        return out

    def process(self, table: pa.Table) -> pa.Table:
        texts = table.column(self.text_column).to_pylist() if table.num_rows else []
        ppl = self.perplexities([t or "" for t in texts])
        scores = [None if p is None else min(1.0, max(0.0, 1.0 - math.log(p) / self.log_vocab)) for p in ppl]
        table = set_column(table, "ppl", pa.array(ppl, pa.float64()))
        return set_column(table, "quality_score", pa.array(scores, pa.float64()))
