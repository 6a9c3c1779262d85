"""The training run's data card (train/data_card.py): rows per record, funnel, card tables; no Ray."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from schemas.card import read_card
from train.args import parse_train_config
from train.data_card import write_training_card
from train.formats import DatasetSpec
from train.ingest import DataStats, TokenizePack, _convert_batch
from train.stages.preference_stage import PreferenceStats

RAW = [
    {"id": "ok1", "messages": [{"role": "user", "content": "What is 2 plus 2?"}, {"role": "assistant", "content": "4."}]},
    {"id": "bad1", "messages": [{"role": "assistant", "content": "hello"}]},  # not_alternating
    {"id": "ok2", "messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."},
                               {"role": "user", "content": "Again."}, {"role": "assistant", "content": "Hi!"}]},
    {"id": "bad2", "conversation": []},  # missing_field (a conversion drop, before tokenizing)
]


def _card_rows(tiny_model_dir) -> pa.Table:
    spec = DatasetSpec(name="chats", path="unused", format="sft")
    raw = {"source": np.array(["chats"] * len(RAW), object), "index": np.arange(len(RAW)),
           "raw": np.array([json.dumps(r) for r in RAW], object)}
    records = _convert_batch(raw, {"chats": spec})
    batch = {name: np.array(records.column(name).to_pylist(), object) for name in records.column_names}
    op = TokenizePack(str(tiny_model_dir), "examples", "chatml", 64, packing=True, seed=0, emit="card")
    return op(batch)


def test_card_rows_one_per_record_with_tokens_or_reason(tiny_model_dir):
    rows = _card_rows(tiny_model_dir).to_pylist()
    assert [r["id"] for r in rows] == ["ok1", "bad1", "ok2", "bad2"]  # input order kept
    by_id = {r["id"]: r for r in rows}
    assert by_id["bad1"]["drop_reason"] == "not_alternating" and by_id["bad1"]["tokens"] is None
    assert by_id["bad2"]["drop_reason"] == "missing_field"
    for rid in ("ok1", "ok2"):
        assert by_id[rid]["drop_reason"] is None and 0 < by_id[rid]["label_tokens"] < by_id[rid]["tokens"] <= 64
    assert by_id["ok2"]["label_tokens"] > by_id["ok1"]["label_tokens"]  # both replies of ok2 train


def test_sft_training_card_matches_the_stats(tiny_model_dir, tmp_path):
    table = _card_rows(tiny_model_dir)

    class Stats(DataStats):
        def card_dataset(self):
            return table

    stats = Stats(records=4, examples=2, drops={"missing_field": 1, "not_alternating": 1})
    cfg = parse_train_config({"stage": "sft", "model": str(tiny_model_dir)})
    card_dir = write_training_card(tmp_path, cfg, stats)
    card = read_card(card_dir / "card.arrow")
    assert (card.rows_kept, card.rows_dropped) == (2, 2)
    assert sorted((d["reason"], d["rows"]) for d in card.table("drops").to_pylist()) == [
        ("missing_field", 1), ("not_alternating", 1)]
    assert {"tokens", "label_tokens"} <= set(card.table("stats").column("column").to_pylist())
    assert (card_dir / "card.md").read_text().count("not_alternating") >= 1
    # counts that disagree with the stats are an error, not a silently wrong card
    stats.examples = 3
    stats.records = 5
    with pytest.raises(RuntimeError, match="do not match"):
        write_training_card(tmp_path, cfg, stats)


def test_preference_stats_card_and_json(tmp_path):
    rows = pa.table({"id": ["a", "b", "c"], "split": ["train", "eval", "train"],
                     "prompt_tokens": pa.array([5, 6, None], pa.int32()),
                     "chosen_tokens": pa.array([3, 4, None], pa.int32()),
                     "rejected_tokens": pa.array([2, 2, None], pa.int32()),
                     "drop_reason": [None, None, "empty_response"]})
    counts = {"stage": "preference_tokenize", "rows_in": 3, "kept": 2, "dropped": {"empty_response": 1},
              "train_pairs": 1, "eval_pairs": 1}
    stats = PreferenceStats(counts, rows)
    assert json.loads(json.dumps(stats)) == counts  # data_stats.json is unchanged by the extra rows
    card_dir = write_training_card(tmp_path, parse_train_config({"stage": "dpo", "model": "tiny"}), stats)
    card = read_card(card_dir / "card.arrow")
    assert card.kind == "preference" and (card.rows_kept, card.rows_dropped) == (2, 1)
    assert (tmp_path / "train_data" / "dropped" / "part-00000.parquet").is_file()
