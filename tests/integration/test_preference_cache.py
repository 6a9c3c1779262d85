"""The rm / dpo stages tokenize their pairs once (issue 17): a second build with the same
inputs starts no tokenizer and yields the same rows and counts; another cutoff is another
cache entry; `tokenized_cache: off` writes nothing."""
from __future__ import annotations

import json

from train.args import parse_train_config
from train.stages.preference_stage import build_preference_dataset

PAIRS = [{"prompt": f"Name a colour {i}.", "chosen": f"Blue number {i}.", "rejected": f"blue blue {i}"}
         for i in range(40)] + [{"prompt": "Same.", "chosen": "A.", "rejected": "A."}]


def _cfg(tmp_path, tiny_model_dir, data, cache, cutoff_len=96, run="run"):
    return parse_train_config({"stage": "dpo", "model": str(tiny_model_dir), "data": [str(data)],
                               "output": str(tmp_path / run), "cutoff_len": cutoff_len,
                               "data_options": {"eval_fraction": 0.2, "tokenized_cache": str(cache)}})


def _rows(ds) -> list:
    return sorted((r["id"], list(r["prompt_ids"]), list(r["chosen_ids"]), list(r["rejected_ids"])) for r in ds.take_all())


def test_second_build_reads_the_cache(ray_session, tmp_path, tiny_model_dir):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS), encoding="utf-8")
    cache = tmp_path / "cache"
    first_ds, first = build_preference_dataset(_cfg(tmp_path, tiny_model_dir, data, cache))
    assert not first["tokenized_cache_reused"] and len(list(cache.iterdir())) == 1
    assert first["rows_in"] == 41 and first["dropped"] == {"identical_responses": 1}
    assert first["train_pairs"] + first["eval_pairs"] == 40 and first["eval_pairs"] > 0
    eval_file = (tmp_path / "run" / "eval_pairs.jsonl").read_text()

    # Another run directory: the cache is shared, the eval pairs are written there too.
    second_ds, second = build_preference_dataset(_cfg(tmp_path, tiny_model_dir, data, cache, run="run2"))
    assert second["tokenized_cache_reused"]
    assert {k: v for k, v in second.items() if k != "tokenized_cache_reused"} == \
        {k: v for k, v in first.items() if k != "tokenized_cache_reused"}
    assert _rows(second_ds) == _rows(first_ds) and len(_rows(first_ds)) == first["train_pairs"]
    assert (tmp_path / "run2" / "eval_pairs.jsonl").read_text() == eval_file
    assert second.card_dataset().num_rows == 41

    # A cutoff that truncates is another fingerprint: a new pass with shorter rows.
    short_ds, short = build_preference_dataset(_cfg(tmp_path, tiny_model_dir, data, cache, cutoff_len=40))
    assert not short["tokenized_cache_reused"] and len(list(cache.iterdir())) == 2
    assert max(len(p) + len(c) for _, p, c, _ in _rows(short_ds)) <= 40

    # Changing the data file changes the key as well.
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS[:20]), encoding="utf-8")
    _, changed = build_preference_dataset(_cfg(tmp_path, tiny_model_dir, data, cache))
    assert not changed["tokenized_cache_reused"] and changed["rows_in"] == 20


def test_cache_off_writes_nothing(ray_session, tmp_path, tiny_model_dir):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS[:12]), encoding="utf-8")
    cfg = parse_train_config({"stage": "rm", "model": str(tiny_model_dir), "data": [str(data)],
                              "output": str(tmp_path / "run"), "cutoff_len": 64,
                              "data_options": {"eval_fraction": 0.0, "tokenized_cache": "off"}})
    ds, stats = build_preference_dataset(cfg)
    assert not stats["tokenized_cache_reused"] and stats["train_pairs"] == 12 == ds.count()
    assert not (tmp_path / "cache").exists()


def test_training_pairs_come_in_a_seeded_random_order(ray_session, tmp_path, tiny_model_dir):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS[:40]), encoding="utf-8")

    def order(seed: int, shuffle: bool) -> list[str]:
        cfg = parse_train_config({"stage": "dpo", "model": str(tiny_model_dir), "data": [str(data)],
                                  "output": str(tmp_path / "run"), "cutoff_len": 96, "seed": seed,
                                  "data_options": {"eval_fraction": 0.0, "shuffle": shuffle,
                                                   "tokenized_cache": str(tmp_path / "cache")}})
        return [r["id"] for r in build_preference_dataset(cfg)[0].take_all()]

    file_order, shuffled = order(42, False), order(42, True)
    assert sorted(shuffled) == sorted(file_order) and len(file_order) == 40  # the same pairs, each once
    assert shuffled != file_order and shuffled == order(42, True) != order(7, True)
