"""Tokenize once (issue 17) and per-dataset weights (issue 13.3), on a local Ray.

One pass fills the cache with the packed rows, the per-record card rows and the stats; a
second build with the same inputs tokenizes nothing and yields the same rows; `--data
PATH:WEIGHT` and YAML `{path, weight}` set the mix."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from train.args import parse_train_config
from train.ingest import build_train_dataset, resolve_data


def _chats(path, n: int, tag: str):
    rows = [{"messages": [{"role": "user", "content": f"{tag} question {i}"},
                          {"role": "assistant", "content": f"{tag} answer {i}"}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_weights_from_cli_and_yaml_entries(tmp_path):
    a, b = _chats(tmp_path / "a.jsonl", 4, "a"), _chats(tmp_path / "b.jsonl", 4, "b")
    cfg = parse_train_config({"stage": "sft", "data": [f"{a}:0.7", {"path": str(b), "weight": 0.3}]})
    assert cfg.data.data == [f"{a}:0.7", {"path": str(b), "weight": 0.3}]
    resolved = resolve_data(cfg.data.data)
    assert [w.weight for w in resolved] == [0.7, 0.3] and [w.spec.path for w in resolved] == [str(a), str(b)]
    with pytest.raises(ValueError, match="must be >= 0"):
        resolve_data([f"{a}:-1"])


def test_mix_ratio_and_second_build_reads_the_cache(ray_session, tmp_path, tiny_model_dir):
    a, b = _chats(tmp_path / "a.jsonl", 300, "a"), _chats(tmp_path / "b.jsonl", 300, "b")

    def build():
        return build_train_dataset("examples", [f"{a}:0.75", f"{b}:0.25"], str(tiny_model_dir), 128, seed=3,
                                   template="chatml", cache_root=tmp_path / "cache", num_samples=400,
                                   shuffle_buffer_size=0)

    first_rows, first = build()
    assert first.collected and not first.cache_reused and first.tokenize_seconds is not None
    sources = Counter(r["source"] for r in first.card_dataset().take_all())
    assert sum(sources.values()) == first.records == 400
    assert abs(sources["a"] / 400 - 0.75) < 0.06, sources  # records drawn per source follow the weights
    assert first.examples + first.dropped == first.records and first.sequences == first_rows.count()

    second_rows, second = build()
    assert second.cache_reused and second.tokenize_seconds is None
    assert second.as_dict()["tokens"] == first.as_dict()["tokens"]
    ids = [list(r["input_ids"]) for r in second_rows.take_all()]
    assert ids == [list(r["input_ids"]) for r in first_rows.take_all()]
    # Another cutoff is another fingerprint: a new pass, not the old rows.
    _, other = build_train_dataset("examples", [f"{a}:0.75", f"{b}:0.25"], str(tiny_model_dir), 96, seed=3,
                                   template="chatml", cache_root=tmp_path / "cache", num_samples=400,
                                   shuffle_buffer_size=0)
    assert not other.cache_reused and len(list((tmp_path / "cache").iterdir())) == 2
