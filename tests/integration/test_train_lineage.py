"""Training lineage through the real data path on a local Ray: the token cache's pass writes it,
a cached rerun (which tokenizes nothing) links the same table into its run directory, and a
streamed run (tokenized_cache off) gets the same table from its own pass."""
from __future__ import annotations

import json

from train.args import parse_train_config
from train.data_card import write_training_card
from train.ingest import build_train_dataset
from train.lineage import iter_lineage, trace_training


def _texts(path, n: int):
    rows = [{"text": " ".join(f"word{i}-{k}" for k in range(3 + (7 * i) % 40))} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_cached_rerun_and_stream_have_the_same_lineage(ray_session, tmp_path, tiny_model_dir):
    data = _texts(tmp_path / "web.jsonl", 120)
    cfg = parse_train_config({"stage": "pt", "model": str(tiny_model_dir), "data": [str(data)]})

    def run(name: str, **options):
        rows, stats = build_train_dataset("blocks", [str(data)], str(tiny_model_dir), 48, seed=1,
                                          cache_root=tmp_path / "cache", pack_window=50, **options)
        if not stats.collected:
            stats.collect()  # a stream counts in a pass of its own, as the launcher runs it
        write_training_card(tmp_path / name, cfg, stats, kind="document")
        return rows, stats, list(iter_lineage(tmp_path / name))

    rows, first, lineage = run("first")
    _, again, relinked = run("again")
    _, streamed, from_stream = run("stream", tokenized_cache="off")
    assert not first.cache_reused and again.cache_reused and streamed.cache_dir is None
    assert lineage == relinked == from_stream
    assert [r["sequence"] for r in lineage] == list(range(rows.count()))
    # every record's pieces, in order, are its tokens: the card's token count per record
    pieces: dict[str, int] = {}
    for r in lineage:
        for doc, length in zip(r["doc_ids"], r["lengths"]):
            pieces[doc] = pieces.get(doc, 0) + length
    assert sorted(pieces) == sorted(f"web-{i}" for i in range(120))  # dataset name + row index
    tokens = {r["id"]: r["tokens"] for r in first.card_dataset().take_all()}
    assert pieces == tokens
    cut = [d for d in pieces if len(trace_training(tmp_path / "again", d)["pieces"]) > 1]
    assert len(cut) == first.split_documents == again.split_documents == streamed.split_documents > 0
