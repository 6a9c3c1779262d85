"""Small embedded datasets, generated here, so `python jobs/train.py --stage sft` runs with no data.

SFT: seed-task style instructions whose answers the generator computes (arithmetic,
word lists, counting, reversing, sorting), some with a follow-up turn and some with a
system prompt. Pretraining: short paragraphs of generated sentences. Both are
deterministic given the seed and written as JSONL through an atomic directory.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from schemas.dataset_io import atomic_output_dir
from train.formats import DatasetSpec
from train.tiny import default_cache_dir, default_corpus

_WORDS = ["river", "garden", "model", "paper", "city", "student", "plan", "story", "data", "weather", "team", "answer"]
_SYSTEMS = [None, None, "You are a helpful assistant.", "Answer in one short sentence."]


def _user(text: str) -> dict:
    return {"role": "user", "content": text, "tool_calls": None}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text, "tool_calls": None}


def _task(rng: random.Random) -> list[dict]:
    kind = rng.randrange(5)
    if kind == 0:
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        turns = [_user(f"What is {a} plus {b}?"), _assistant(f"{a} plus {b} is {a + b}.")]
        if rng.random() < 0.4:
            c = rng.randint(2, 9)
            turns += [_user(f"And times {c}?"), _assistant(f"{a + b} times {c} is {(a + b) * c}.")]
        return turns
    words = rng.sample(_WORDS, rng.randint(3, 6))
    listed = ", ".join(words)
    if kind == 1:
        turns = [_user(f"Sort these words alphabetically: {listed}."), _assistant(", ".join(sorted(words)) + ".")]
        if rng.random() < 0.4:
            turns += [_user("Now in reverse order."), _assistant(", ".join(sorted(words, reverse=True)) + ".")]
        return turns
    if kind == 2:
        return [_user(f"How many words are in this list: {listed}?"), _assistant(f"There are {len(words)} words.")]
    if kind == 3:
        word = rng.choice(_WORDS)
        return [_user(f"Spell the word '{word}' backwards."), _assistant(f"'{word}' backwards is '{word[::-1]}'.")]
    longest = max(words, key=lambda w: (len(w), w))
    turns = [_user(f"Which word is the longest: {listed}?"), _assistant(f"The longest word is '{longest}'.")]
    if rng.random() < 0.4:
        turns += [_user("How many letters does it have?"), _assistant(f"'{longest}' has {len(longest)} letters.")]
    return turns


def sft_default_sample(n: int = 200, seed: int = 0) -> list[dict]:
    """`n` SFT conversations (our `sft` kind), single- and multi-turn."""
    rng = random.Random(seed)
    return [{"id": f"default-sft-{i}", "messages": _task(rng), "system": rng.choice(_SYSTEMS), "tools": None,
             "source": "raymill-default-sft"} for i in range(n)]


def pretrain_default_sample(n: int = 400, seed: int = 0) -> list[dict]:
    """`n` plain-text documents of 2-12 generated sentences each."""
    rng = random.Random(seed)
    sentences = default_corpus(n_sentences=n * 8, seed=seed + 1)
    docs = []
    for i in range(n):
        k = rng.randint(2, 12)
        start = rng.randrange(len(sentences) - k)
        docs.append({"id": f"default-pt-{i}", "text": " ".join(sentences[start:start + k])})
    return docs


def write_default_sample(stage: str, directory: str | Path | None = None, seed: int = 0) -> DatasetSpec:
    """Write the stage's default sample as JSONL (once) and return its spec."""
    directory = Path(directory or default_cache_dir() / f"default-data-{stage}-s{seed}")
    if not (directory / "_SUCCESS").exists():
        rows = pretrain_default_sample(seed=seed) if stage == "pt" else sft_default_sample(seed=seed)
        with atomic_output_dir(directory) as tmp:
            with open(tmp / "part-00000.jsonl", "w", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return DatasetSpec(name=f"default_{stage}", path=str(directory), format="text" if stage == "pt" else "sft")
