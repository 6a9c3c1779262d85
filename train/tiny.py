"""Tiny-model kit: a byte-level BPE tokenizer and a small Llama model built locally.

Tests and embedded defaults cannot download from a model hub, so they build a
tokenizer and a model here, save them with `save_pretrained`, and then load them
through the same `AutoTokenizer` / `AutoModelForCausalLM` path a real model uses.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterable

KIT_VERSION = 1  # bump when the defaults below change, so cached copies rebuild

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

# ChatML, the format of the Qwen family: the tiny model speaks it natively.
CHATML_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- set messages = messages[1:] -%}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

_SUBJECTS = ["the model", "a river", "the city", "our team", "the data", "a student", "the garden", "this paper"]
_VERBS = ["describes", "improves", "follows", "measures", "explains", "collects", "builds", "answers"]
_OBJECTS = ["the results", "a short story", "clean text", "the weather", "three examples", "the question",
            "a simple plan", "every detail"]
_TAILS = ["today.", "with care.", "in one step.", "before noon.", "for the report.", "again and again."]
_ZH = ["今天天气很好。", "我们训练一个小模型。", "数据清洗很重要。", "请回答这个问题。"]


def default_corpus(n_sentences: int = 4000, seed: int = 0) -> list[str]:
    """Generated English and Chinese sentences: enough to train a small BPE vocabulary."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_sentences):
        out.append(" ".join([rng.choice(_SUBJECTS).capitalize(), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_TAILS)]))
        if rng.random() < 0.1:
            out.append(rng.choice(_ZH))
    return out


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, chat_template: str = CHATML_TEMPLATE):
    """Train a byte-level BPE tokenizer and wrap it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = chat_template
    return fast


def build_model(tokenizer, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                intermediate_size: int = 176, max_position_embeddings: int = 2048, seed: int = 0):
    """A randomly initialised Llama-architecture causal LM sized for the tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def save_tiny(path: str | Path, texts: Iterable[str] | None = None, vocab_size: int = 1024, **model_kwargs) -> Path:
    """Build tokenizer + model and save both under `path` (written atomically)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tokenizer = train_tokenizer(texts if texts is not None else default_corpus(), vocab_size=vocab_size)
    model = build_model(tokenizer, **model_kwargs)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tokenizer.save_pretrained(tmp)
    model.save_pretrained(tmp)
    if path.exists():
        import shutil
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def default_cache_dir() -> Path:
    return Path(os.environ.get("RAYMILL_CACHE", Path.home() / ".cache" / "raymill"))


def tiny_model_path(cache_dir: str | Path | None = None) -> Path:
    """Path of the default tiny model, built on first use and then reused."""
    path = Path(cache_dir or default_cache_dir()) / f"tiny-llama-v{KIT_VERSION}"
    if not (path / "config.json").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tiny(path)
    return path
