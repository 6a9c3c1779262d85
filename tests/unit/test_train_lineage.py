"""Training lineage (train/lineage.py): which records went into which packed sequences, from the
token cache's one pass to the run's card and `jobs/card.py RUN --trace DOC_ID`; no Ray."""
from __future__ import annotations

import json
import random
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from schemas.funnel import StageCount, read_accounting, write_accounting
from train.args import parse_train_config
from train.data_card import write_training_card
from train.formats import DatasetSpec
from train.ingest import (
    CARD_ROW_SCHEMA,
    TRAIN_ROW_SCHEMA,
    DataStats,
    TokenizePack,
    _convert_batch,
)
from train.lineage import LINEAGE_SCHEMA, iter_lineage, trace_training
from train.packing import BlockChunker, Span
from train.token_cache import cached_pass
from train.tokenize import encode_sft

WORDS = ["the", "model", "reads", "a", "short", "story", "about", "clean", "text", "and", "three", "examples", "of",
         "weather"]


def _batch(spec: DatasetSpec, raw: list) -> dict:
    """Converted records of `raw`, as TokenizePack receives a batch from the read."""
    batch = {"source": np.array([spec.name] * len(raw), object), "index": np.arange(len(raw)),
             "raw": np.array([json.dumps(r) for r in raw], object)}
    records = _convert_batch(batch, {spec.name: spec})
    return {name: np.array(records.column(name).to_pylist(), object) for name in records.column_names}


def _tables(out: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(packed rows, lineage rows) of one `emit="all"` batch."""
    def read(name):
        return pa.ipc.open_stream(out.column(name)[0].as_py()).read_all()
    return read("train"), read("lineage")


def _chats(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        messages = []
        for _ in range(rng.randint(1, 2)):
            messages.append({"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(2, 12)))})
            messages.append({"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(1, 15)))})
        rows.append({"messages": messages} if i % 3 else {"id": f"own-{i}", "messages": messages})
    rows.append({"messages": [{"role": "assistant", "content": "no prompt"}]})  # dropped: not_alternating
    return rows


def test_block_chunker_spans_follow_documents_across_blocks():
    docs = [[1, 2, 3, 0], [4, 5, 0], [6, 7, 8, 9, 10, 0]]
    blocks = list(BlockChunker(4, track_spans=True).feed(docs, ["a", "b", "c"]))
    assert [b["input_ids"] for b in blocks] == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 10], [0]]
    assert [b["spans"] for b in blocks] == [
        [Span("a", 0, 4, 0)], [Span("b", 0, 3, 0), Span("c", 3, 1, 0)], [Span("c", 0, 4, 1)], [Span("c", 0, 1, 5)]]
    assert "spans" not in next(iter(BlockChunker(4).feed(docs)))  # untracked: the rows as before


def test_sft_lineage_lists_every_example_once_with_its_own_tokens(tiny_model_dir):
    spec = DatasetSpec(name="chats", path="unused", format="sft")
    raw = _chats(60)
    op = TokenizePack(str(tiny_model_dir), "examples", "chatml", 96, packing=True, seed=0, emit="all")
    train, lineage = _tables(op(_batch(spec, raw)))
    assert lineage.schema.names == ["doc_ids", "starts", "lengths", "doc_offsets"]
    assert lineage.num_rows == train.num_rows > 1

    expected = {}
    for i, row in enumerate(raw[:-1]):
        rid = row.get("id", f"chats-{i}")  # a record's own id, else dataset name + row index
        expected[rid] = encode_sft({"messages": row["messages"]}, op.tokenizer, op.template, 96).input_ids
    pieces = [(seq, doc, start, length, offset) for seq, row in enumerate(lineage.to_pylist())
              for doc, start, length, offset in zip(row["doc_ids"], row["starts"], row["lengths"], row["doc_offsets"])]
    assert sorted(p[1] for p in pieces) == sorted(expected)  # every example exactly once, the drop nowhere
    rows = train.to_pylist()
    for seq, doc, start, length, offset in pieces:
        assert offset == 0  # SFT examples are never cut
        assert rows[seq]["input_ids"][start:start + length] == expected[doc]
        assert rows[seq]["position_ids"][start] == 0
    for seq, row in enumerate(lineage.to_pylist()):  # the spans tile each packed row end to end
        assert row["starts"] == list(np.cumsum([0] + row["lengths"][:-1]))
        assert sum(row["lengths"]) == len(rows[seq]["input_ids"])


def _documents(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f"doc-{i}", "text": " ".join(rng.choices(WORDS, k=rng.randint(3, 40)))} for i in range(n)]


def test_pretraining_blocks_list_a_cut_document_in_each_block(tiny_model_dir):
    spec = DatasetSpec(name="web", path="unused", format="text")
    docs = _documents(30)
    op = TokenizePack(str(tiny_model_dir), "blocks", None, 32, packing=True, seed=0, emit="all")
    out = op(_batch(spec, docs))
    train, lineage = _tables(out)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tokens = {d["id"]: tokenizer(d["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
              for d in docs}

    rows = train.to_pylist()
    pieces = defaultdict(list)
    for seq, row in enumerate(lineage.to_pylist()):
        for doc, start, length, offset in zip(row["doc_ids"], row["starts"], row["lengths"], row["doc_offsets"]):
            pieces[doc].append((seq, offset, rows[seq]["input_ids"][start:start + length]))
    assert set(pieces) == set(tokens)
    split = [doc for doc, p in pieces.items() if len(p) > 1]
    assert split, "no document crossed a block boundary: the test data is too short"
    for doc, p in pieces.items():
        assert [seq for seq, _, _ in p] == list(range(p[0][0], p[0][0] + len(p)))  # consecutive blocks
        assert sum(len(ids) for _, _, ids in p) == len(tokens[doc])  # the pieces add up to the document
        assert [t for _, _, ids in p for t in ids] == tokens[doc]  # ... token for token, in order
        assert [offset for _, offset, _ in p] == list(np.cumsum([0] + [len(ids) for _, _, ids in p[:-1]]))
    assert json.loads(out.column("stats")[0].as_py())["split_documents"] == len(split)


def _curated_dir(root, docs: list[dict]):
    """A curate output as the trace reads it: data/ with ids and inputs, accounting.json."""
    (root / "data").mkdir(parents=True)
    (root / "dropped").mkdir()
    pq.write_table(pa.table({"id": [d["id"] for d in docs], "text": [d["text"] for d in docs],
                             "source": ["crawl.jsonl"] * len(docs),
                             "source_offset": pa.array([100 * i for i in range(len(docs))], pa.int64())}),
                   root / "data" / "part-00000.parquet")
    write_accounting(root, [StageCount("read", len(docs), len(docs), {})], {"job": "curate"})
    return root


def _cached_run(tmp_path, tiny_model_dir, docs, name: str):
    """One cache pass (as build_train_dataset runs it, minus Ray) and a run dir's training card."""
    curated = _curated_dir(tmp_path / "curated", docs) if not (tmp_path / "curated").exists() else tmp_path / "curated"
    spec = DatasetSpec(name="curated", path=str(curated), format="text")
    op = TokenizePack(str(tiny_model_dir), "blocks", None, 32, packing=True, seed=0, emit="all")
    raw = docs + [{"id": "empty-doc", "text": "   "}]
    halves = [raw[: len(raw) // 2], raw[len(raw) // 2:]]

    def run_pass():
        for half in halves:
            out = op(_batch(spec, half))
            yield {k: out.column(k).to_pylist() for k in out.column_names}

    cache = tmp_path / "cache" / "fp"
    counts, reused = cached_pass(cache, run_pass, TRAIN_ROW_SCHEMA, CARD_ROW_SCHEMA)
    stats = DataStats.from_counts(counts, cache, reused)
    stats.sources = {"curated": str(curated)}
    cfg = parse_train_config({"stage": "pt", "model": str(tiny_model_dir), "data": [str(curated)]})
    write_training_card(tmp_path / name, cfg, stats, kind="document")
    return tmp_path / name, cache, stats


def test_training_card_links_the_cached_lineage_and_trace_finds_the_doc(tmp_path, tiny_model_dir, capsys):
    from jobs.card import main

    docs = _documents(40, seed=2)
    run, cache, stats = _cached_run(tmp_path, tiny_model_dir, docs, "run")
    table = pq.read_table(run / "train_data" / "lineage")
    assert table.schema.equals(LINEAGE_SCHEMA)
    assert table.column("sequence").to_pylist() == list(range(stats.sequences))  # numbered across batches
    cached = sorted((cache / "lineage").glob("*.parquet"))
    linked = sorted((run / "train_data" / "lineage").glob("*.parquet"))
    assert [p.name for p in linked] == [p.name for p in cached]
    assert all(a.stat().st_ino == b.stat().st_ino for a, b in zip(linked, cached))  # linked, not copied
    assert (run / "train_data" / "card" / "card.md").is_file()

    _, accounting = read_accounting(run / "train_data")
    summary = accounting["lineage"]
    assert summary["sequences"] == stats.sequences == table.num_rows
    assert summary["documents"] == len(docs) and summary["sources"] == {"curated": str(tmp_path / "curated")}
    cut = sorted({x for r in iter_lineage(run) for x, o in zip(r["doc_ids"], r["doc_offsets"]) if o > 0})
    assert summary["split_documents"] == len(cut) == stats.split_documents > 0

    doc = cut[0]
    result = trace_training(run, doc)
    assert len(result["pieces"]) >= 2 and result["kept"] and result["source"] == "curated"
    assert sum(p["length"] for p in result["pieces"]) == result["tokens"]

    main([str(run), "--trace", doc])
    text = capsys.readouterr().out
    assert f"doc_id    {doc}" in text and f"in {len(result['pieces'])} packed sequences" in text
    first = result["pieces"][0]
    assert f"{first['sequence']:>8}  tokens [{first['start']}, {first['start'] + first['length']})" in text
    # composed with the curate trace: the run recorded its curated dataset's path
    assert f"curated in {tmp_path / 'curated'}" in text
    assert f"input    crawl.jsonl @ byte {100 * int(doc.split('-')[1])}" in text

    main([str(run), "--trace", "empty-doc"])
    assert "dropped before packing: empty_text" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not in the training run"):
        main([str(run), "--trace", "no-such-doc"])
    with pytest.raises(ValueError, match="not a curate dataset"):
        main([str(run), "--trace", doc, "--curated", str(tmp_path)])


def test_a_second_card_from_the_same_cache_has_the_same_lineage(tmp_path, tiny_model_dir):
    docs = _documents(25, seed=3)
    first, _, stats = _cached_run(tmp_path, tiny_model_dir, docs, "first")
    again, _, cached = _cached_run(tmp_path, tiny_model_dir, docs, "again")
    assert not stats.cache_reused and cached.cache_reused  # the rerun tokenized nothing
    assert list(iter_lineage(first)) == list(iter_lineage(again)) != []
    assert read_accounting(again / "train_data")[1]["lineage"] == read_accounting(first / "train_data")[1]["lineage"]


def test_stats_without_packed_sequences_write_no_lineage(tmp_path, tiny_model_dir):
    table = pa.table({"id": ["a"], "source": ["s"], "tokens": pa.array([3], pa.int32()),
                      "label_tokens": pa.array([2], pa.int32()), "truncated": [False],
                      "drop_reason": pa.array([None], pa.string()), "drop_detail": pa.array([None], pa.string())})

    class Stats(DataStats):
        def card_dataset(self):
            return table

    cfg = parse_train_config({"stage": "sft", "model": str(tiny_model_dir)})
    write_training_card(tmp_path, cfg, Stats(records=1, examples=1))
    assert not (tmp_path / "train_data" / "lineage").exists()
    assert "lineage" not in read_accounting(tmp_path / "train_data")[1]
