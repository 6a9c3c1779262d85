"""Ray Data readers: one read task per file, every record accounted for, stages run in workers."""
from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pytest

from curate.extract import ExtractStage
from curate.readers import InputError, iter_file, read_documents, read_raw
from curate.sample_crawl import WarcRecord, build_records, ensure_sample_crawl, write_warc


def test_read_raw_over_files_matches_local_reading(ray_session, tmp_path):
    sample = ensure_sample_crawl(tmp_path / "cache")
    html = b"<html><body><article><p>A second file with one page.</p></article></body></html>"
    other = write_warc(tmp_path / "other.warc.gz", [WarcRecord("https://b.example/1", html),
                                                   WarcRecord("https://b.example/1", record_type="request")])
    ds = read_raw([sample, other], {"batch_rows": 64})
    rows = ds.take_all()
    assert len(rows) == len(build_records()) + 2
    local = Counter(r["drop_reason"] for t in iter_file(sample) for r in t.to_pylist())
    remote = Counter(r["drop_reason"] for r in rows if r["source"] == str(sample))
    assert remote == local
    docs = tmp_path / "docs.jsonl"
    docs.write_text("{}\n")
    with pytest.raises(InputError, match="read_documents"):
        read_raw(docs)


def test_read_documents_and_extract_in_workers(ray_session, tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join([json.dumps({"id": "a", "text": "hello"}), "not json", json.dumps({"id": "c"})]) + "\n")
    rows = read_documents(path).take_all()
    assert sorted((r["id"] == "a", r["drop_reason"]) for r in rows) == [(False, "invalid_json"), (False, "missing_text"), (True, None)]

    sample = ensure_sample_crawl(tmp_path / "cache")
    stage = ExtractStage({"timeout_s": 5})
    out = read_raw(sample).map_batches(stage, batch_format="pyarrow", batch_size=64).take_all()
    reasons = Counter(r["drop_reason"] for r in out)
    assert len(out) == len(build_records())
    assert reasons[None] > 100 and reasons["binary_content"] >= 1 and reasons["empty_body"] >= 1
    assert "raw" not in out[0]


class _StallingExtract(ExtractStage):
    """An extractor that never returns: the time limit must fire inside a Ray worker."""

    def _trafilatura(self, html, url, fast=False):
        x = 0
        while True:
            x += 1


def test_time_limit_fires_inside_ray_workers(ray_session):
    table = pa.table({"id": ["a", "b"], "url": ["https://a.example/", "https://a.example/2"],
                      "raw": pa.array([b"<html><body><p>text</p></body></html>"] * 2, pa.binary()),
                      "source": ["t", "t"]})
    import ray

    out = ray.data.from_arrow(table).map_batches(_StallingExtract({"timeout_s": 0.2}), batch_format="pyarrow").take_all()
    assert [r["drop_reason"] for r in out] == ["extract_timeout", "extract_timeout"]
