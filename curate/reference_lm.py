"""The embedded reference language model behind the default perplexity labels.

CCNet scores web text with a language model trained on a reference corpus (Wikipedia):
text that reads like the reference gets a low perplexity. The project cannot download a
model, so the default reference LM is trained here, in seconds on one CPU core, on the
fluent multilingual prose of the sample crawl's generator (`curate.sample_crawl.paragraphs`,
seeded apart from the crawl itself, so the crawl's own pages are not the training text).
It is a real Hugging Face causal LM (byte-level BPE tokenizer + a small Llama), saved with
`save_pretrained`, so the perplexity stage loads it exactly as it loads any other model
directory, e.g. a 0.5B model on a GPU node.

`reference_lm_path(cache_dir)` builds it on first use and then reuses the cached copy.
Built in the driver before any data is read (curate.registry resolves `model_path:
reference`), so actors only load it.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Iterable

REFERENCE_VERSION = 1  # bump when the corpus or the training recipe changes: caches rebuild
REFERENCE_KEYWORD = "reference"
CORPUS_SEED = 7_000_001  # any seed but the sample crawl's own (curate.sample_crawl.SEED)
SPECIAL_TOKENS = ["<|endoftext|>", "<pad>"]


def reference_corpus(paragraphs_per_language: int = 160, seed: int = CORPUS_SEED) -> list[str]:
    """Fluent paragraphs in every language of the sample crawl's generator."""
    from curate.sample_crawl import LANGS, paragraphs

    rng = random.Random(seed)
    return [p for lang in LANGS for p in paragraphs(rng, lang, paragraphs_per_language)]


def _tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Byte level: every string maps to tokens (no unknown token), whatever the script.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>")


def train_reference_lm(path: str | Path, texts: Iterable[str] | None = None, vocab_size: int = 2048,
                       hidden_size: int = 64, layers: int = 2, context: int = 128, steps: int = 300,
                       batch: int = 16, lr: float = 3e-3, seed: int = 0) -> Path:
    """Train a small Llama on `texts` (default: the reference corpus); save it atomically at `path`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = list(texts) if texts is not None else reference_corpus()
    path = Path(path)
    tokenizer = _tokenizer(texts, vocab_size)
    stream = []
    for text in texts:
        stream.extend(tokenizer(text)["input_ids"] + [tokenizer.eos_token_id])
    tokens = torch.tensor(stream, dtype=torch.long)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 3,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=True, bos_token_id=None,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, max(1, len(tokens) - context - 1), (batch,), generator=generator)
        x = torch.stack([tokens[s:s + context] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tokenizer.save_pretrained(tmp)
    model.save_pretrained(tmp)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def default_cache_dir() -> Path:
    return Path(os.environ.get("RAYMILL_CACHE", Path.home() / ".cache" / "raymill")).expanduser()


def reference_lm_path(cache_dir: str | Path | None = None) -> Path:
    """The embedded reference LM's directory, trained on first use (a few seconds) and cached."""
    path = Path(cache_dir or default_cache_dir()) / f"reference-lm-v{REFERENCE_VERSION}"
    if not (path / "config.json").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        train_reference_lm(path)
    return path
