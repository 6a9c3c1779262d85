"""Cards of SFT and preference sets: turns, prompt/response lengths, score margins, self-instruct extras."""
from __future__ import annotations

import random

import numpy as np
import pyarrow.compute as pc
import pytest

from schemas.card import read_card, write_card
from schemas.dataset_io import atomic_output_dir, read_parquet_dir, write_parquet
from schemas.funnel import StageCount
from schemas.validate import table_from_rows

VERBS = ["Write", "Explain", "List", "Summarize", "Translate"]


@pytest.fixture(scope="module")
def tokenizer():
    from train.tiny import default_corpus, train_tokenizer

    return train_tokenizer(default_corpus(200), vocab_size=300)


def _stat(card, column, split="kept") -> dict:
    return next(r for r in card.table("stats").to_pylist() if r["split"] == split and r["column"] == column)


def _sft_rows(n: int, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(n):
        messages = []
        for _ in range(rng.randint(1, 3)):
            messages.append({"role": "user", "content": f"{rng.choice(VERBS)}: topic {i} " + "x " * rng.randint(0, 30)})
            messages.append({"role": "assistant", "content": "answer " * rng.randint(1, 60)})
        rows.append({"id": f"c{i}", "messages": messages, "rouge_to_nearest_seed": rng.random() * 0.7})
    return rows


def test_sft_card_has_turns_lengths_tokens_rouge_and_leading_verbs(tmp_path, tokenizer):
    rows = _sft_rows(50, random.Random(1))
    with atomic_output_dir(tmp_path / "sft") as tmp:
        write_parquet(table_from_rows(rows, "sft"), tmp / "data", "sft")
    card_dir = write_card(tmp_path / "sft", "sft", run={"job": "synth"},
                          funnel=[StageCount("generate", 58, 50, {"rouge_too_similar": 8})], tokenizer=tokenizer)
    card = read_card(card_dir)

    turns = [len(r["messages"]) for r in rows]
    assert _stat(card, "turns")["mean"] == pytest.approx(np.mean(turns))
    assert _stat(card, "turns")["max"] == max(turns)
    response_chars = [sum(len(t["content"]) for t in r["messages"] if t["role"] == "assistant") for r in rows]
    prompt_chars = [sum(len(t["content"]) for t in r["messages"] if t["role"] == "user") for r in rows]
    assert _stat(card, "response_chars")["mean"] == pytest.approx(np.mean(response_chars))
    assert _stat(card, "prompt_chars")["q50"] == pytest.approx(np.median(prompt_chars))
    response_tokens = [len(tokenizer("\n".join(t["content"] for t in r["messages"] if t["role"] == "assistant"),
                                     add_special_tokens=False)["input_ids"]) for r in rows]
    assert _stat(card, "response_tokens")["mean"] == pytest.approx(np.mean(response_tokens))

    rouge = read_parquet_dir(tmp_path / "sft" / "data").column("rouge_to_nearest_seed")
    assert _stat(card, "rouge_to_nearest_seed")["mean"] == pytest.approx(pc.mean(rouge).as_py())
    verbs = {}
    for r in rows:
        verb = r["messages"][0]["content"].split()[0].strip(":").lower()
        verbs[verb] = verbs.get(verb, 0) + 1
    top = {r["value"]: r["count"] for r in card.table("top_values").to_pylist() if r["column"] == "instruction_leading_word"}
    assert top == verbs
    assert (card_dir / "hist-rouge_to_nearest_seed.png").exists()
    assert (card_dir / "top-kept-instruction_leading_word.png").exists()
    assert "turns (derived)" in (card_dir / "card.html").read_text(encoding="utf-8")


def test_preference_card_has_score_margins_and_lengths(tmp_path):
    rng = random.Random(2)
    rows = []
    for i in range(40):
        chosen_score = rng.uniform(0, 5)
        rows.append({"id": f"p{i}", "prompt": [{"role": "user", "content": "Q " * rng.randint(1, 20)}],
                     "chosen": "good " * rng.randint(1, 50), "rejected": "bad " * rng.randint(1, 50),
                     "chosen_score": chosen_score, "rejected_score": chosen_score - rng.uniform(-0.5, 3)})
    with atomic_output_dir(tmp_path / "pref") as tmp:
        write_parquet(table_from_rows(rows, "preference"), tmp / "data", "preference")
    card = read_card(write_card(tmp_path / "pref", "preference", funnel=[StageCount("pair", 40, 40)]))
    margins = [r["chosen_score"] - r["rejected_score"] for r in rows]
    margin = _stat(card, "score_margin")
    assert margin["mean"] == pytest.approx(np.mean(margins)) and margin["min"] == pytest.approx(min(margins))
    assert _stat(card, "chosen_chars")["mean"] == pytest.approx(np.mean([len(r["chosen"]) for r in rows]))
    assert _stat(card, "rejected_chars")["max"] == max(len(r["rejected"]) for r in rows)
    assert _stat(card, "prompt_turns")["mean"] == 1
    sample = card.table("samples").to_pylist()[0]
    assert "chosen: " in sample["text"] and "rejected: " in sample["text"]
