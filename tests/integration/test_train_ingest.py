"""The training data path end to end on local Ray: read, mix, convert, tokenize, mask, pack, shard."""
from __future__ import annotations

import json
import threading

import pytest

from train.collate import FlattenCollate, flatten_collate
from train.ingest import build_train_dataset
from train.tokenize import IGNORE_INDEX

GOOD = [
    {"id": f"g{i}", "messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                                 {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]}
    for i in range(40)
] + [
    {"id": f"m{i}", "system": "Be brief.",
     "messages": [{"role": "user", "content": "Sort: river, city."}, {"role": "assistant", "content": "city, river."},
                  {"role": "user", "content": "Reverse it."}, {"role": "assistant", "content": "river, city."}]}
    for i in range(20)
]
BAD = [
    {"id": "b1", "messages": [{"role": "assistant", "content": "hello"}]},  # not_alternating
    {"id": "b2", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},  # empty
    {"id": "b3", "messages": [{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}]},  # unknown_role
    {"id": "b4", "conversation": []},  # missing_field
    {"id": "b5", "messages": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]},
]
CUTOFF = 128


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ingest") / "chats.jsonl"
    rows = GOOD[:30] + BAD + GOOD[30:]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _build(sft_file, tiny_model_dir, **kwargs):
    data = [{"name": "chats", "path": str(sft_file), "format": "sft"}]
    return build_train_dataset("examples", data, str(tiny_model_dir), CUTOFF, packing=True, seed=7, template="chatml",
                               shuffle_buffer_size=16, pack_window=32, **kwargs)


def test_sft_packed_rows_and_counted_drops(ray_session, sft_file, tiny_model_dir):
    ds, stats = _build(sft_file, tiny_model_dir)
    rows = ds.take_all()
    assert flatten_collate(rows[:3])["input_ids"].shape[1] == sum(len(r["input_ids"]) for r in rows[:3])
    assert sum(r["num_examples"] for r in rows) == len(GOOD)  # every good example, each in one pack
    for r in rows:
        ids, labels, pos = list(r["input_ids"]), list(r["labels"]), list(r["position_ids"])
        assert len(ids) == len(labels) == len(pos) <= CUTOFF
        assert pos.count(0) == r["num_examples"]
        assert all(labels[i] == IGNORE_INDEX for i, p in enumerate(pos) if p == 0)
    stats.collect()
    assert stats.records == len(GOOD) + len(BAD) and stats.examples == len(GOOD)
    assert stats.drops == {"empty_assistant_turn": 1, "missing_field": 1, "no_labels_after_cutoff": 1,
                           "not_alternating": 1, "unknown_role": 1}
    assert stats.tokens == sum(len(r["input_ids"]) for r in rows)
    assert 0.5 < stats.packing_efficiency <= 1.0
    drops = stats.drops_dataset().take_all()
    assert sorted(d["id"] for d in drops) == ["b1", "b2", "b3", "b4", "b5"]
    assert all(d["drop_reason"] and d["source"] == "chats" for d in drops)


def test_deterministic_given_seed(ray_session, sft_file, tiny_model_dir):
    one = [list(r["input_ids"]) for r in _build(sft_file, tiny_model_dir)[0].take_all()]
    two = [list(r["input_ids"]) for r in _build(sft_file, tiny_model_dir)[0].take_all()]
    assert one == two


def test_ray_train_like_shards(ray_session, sft_file, tiny_model_dir):
    """Two consumers of `streaming_split` (what Ray Train's get_dataset_shard hands each
    worker) iterate torch batches through flatten_collate at the same time; tokenization
    runs in an actor pool here (the default is Ray tasks)."""
    ds, _ = _build(sft_file, tiny_model_dir, num_actors=1)
    shards = ds.streaming_split(2, equal=False)
    seen: list[list] = [[], []]

    def consume(rank: int) -> None:
        for batch in shards[rank].iter_torch_batches(batch_size=2, collate_fn=FlattenCollate()):
            assert set(batch) == {"input_ids", "labels", "position_ids"} and batch["input_ids"].shape[0] == 1
            seen[rank].append(int((batch["position_ids"] == 0).sum()))

    threads = [threading.Thread(target=consume, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sum(map(sum, seen)) == len(GOOD)


def test_pretraining_blocks_with_annealing_mix(ray_session, sft_file, tiny_model_dir, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"The river builds a simple plan number {i}."}) + "\n"
                            for i in range(300)), encoding="utf-8")
    data = [{"name": "web", "path": str(docs), "format": "text"},
            {"name": "chats", "path": str(sft_file), "format": "sft"}]
    schedule = [{"until": 0.75, "weights": {"web": 1.0}}, {"until": 1.0, "weights": {"web": 0.5, "chats": 0.5}}]
    ds, stats = build_train_dataset("blocks", data, str(tiny_model_dir), 64, packing=True, seed=1, template="chatml",
                                    schedule=schedule, num_samples=200, shuffle_buffer_size=0, pack_window=50)
    rows = ds.take_all()
    lengths = [len(r["input_ids"]) for r in rows]
    # Blocks are full, except at most one shorter tail per window of 50 documents.
    assert lengths and sum(n < 64 for n in lengths) <= 200 // 50 and max(lengths) == 64
    text = [r["input_ids"] for r in rows]
    assert all(list(r["position_ids"]) == list(range(len(r["input_ids"]))) for r in rows)
    # Chat data appears only in the final quarter of the run.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    decoded = [tok.decode(list(ids)) for ids in text]
    first_chat = next(i for i, d in enumerate(decoded) if "<|im_start|>" in d)
    assert first_chat >= int(0.6 * len(decoded))
