"""Readers: every input record becomes one row; bad input is a counted drop or a clear error."""
from __future__ import annotations

import gzip
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.readers import (InputError, ReadConfig, expand_inputs, iter_file, iter_inputs)
from curate.sample_crawl import WarcRecord, build_records, ensure_sample_crawl, write_warc
from schemas.validate import validate

HTML = b"<html><head><title>t</title></head><body><article><p>Hello reader, this is a page.</p></article></body></html>"


def rows(path, **cfg):
    return pa.concat_tables(list(iter_file(path, cfg))).to_pylist()


def test_warc_rows_one_per_record_with_skips_counted(tmp_path):
    recs = [
        WarcRecord("", b"software: test\r\n", record_type="warcinfo", content_type="application/warc-fields"),
        WarcRecord("https://a.example/1", record_type="request"),
        WarcRecord("https://a.example/1", HTML),
        WarcRecord("https://a.example/1", record_type="revisit"),
        WarcRecord("https://a.example/logo.png", b"\x89PNG....", content_type="image/png"),
        WarcRecord("https://a.example/meta", b"x: 1\r\n", record_type="metadata", content_type="application/warc-fields"),
        WarcRecord("https://a.example/gone", b"<html>gone</html>", status=404),
        WarcRecord("https://a.example/untyped", HTML, content_type=None),
    ]
    for name in ("t.warc", "t.warc.gz"):
        out = rows(write_warc(tmp_path / name, recs))
        assert len(out) == len(recs)
        reasons = Counter(r["drop_reason"] for r in out)
        assert reasons == {None: 2, "warc_warcinfo": 1, "warc_request": 1, "warc_revisit": 1, "non_html": 1,
                           "warc_metadata": 1, "http_not_ok": 1}
        kept = [r for r in out if r["drop_reason"] is None]
        assert kept[0]["raw"] == HTML and kept[0]["content_type"] == "text/html" and kept[0]["charset"] == "utf-8"
        assert kept[0]["http_status"] == 200 and kept[0]["warc_date"] is not None
        assert all(r["raw"] == b"" for r in out if r["drop_reason"])  # skipped rows hold no payload
        assert len({r["id"] for r in out}) == len(out)
        assert [r["source_offset"] for r in out] == sorted(r["source_offset"] for r in out)


def test_raw_tables_validate_as_raw_page(tmp_path):
    path = ensure_sample_crawl(tmp_path)
    tables = list(iter_file(path, {"batch_rows": 50}))
    assert all(t.num_rows <= 50 for t in tables) and len(tables) > 2
    validate(tables[0], "raw_page")
    assert sum(t.num_rows for t in tables) == len(build_records())


def test_tables_are_bounded_by_payload_bytes_too(tmp_path):
    big = b"<html><body><p>" + b"x" * 10_000 + b"</p></body></html>"
    path = write_warc(tmp_path / "big.warc.gz", [WarcRecord(f"https://a.example/{i}", big) for i in range(10)])
    tables = list(iter_file(path, {"batch_rows": 100, "batch_bytes": 25_000}))
    assert [t.num_rows for t in tables] == [3, 3, 3, 1]  # 3 pages pass 25 kB; the row cap never binds
    assert [t.num_rows for t in iter_file(path, {"batch_rows": 4})] == [4, 4, 2]


@pytest.mark.parametrize("name", ["c.warc.gz", "c.warc"])
def test_truncated_warc_keeps_readable_records_and_counts_the_tail(tmp_path, name):
    recs = [WarcRecord(f"https://a.example/{i}", HTML * 20) for i in range(6)]
    path = write_warc(tmp_path / ("full-" + name), recs)
    data = path.read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: int(len(data) * 0.7)])
    out = rows(cut)
    good = [r for r in out if r["drop_reason"] is None]
    bad = [r for r in out if r["drop_reason"] == "corrupt_warc"]
    assert 2 <= len(good) < 6 and len(bad) == 1 and len(out) == len(good) + 1
    assert str(cut) in bad[0]["read_error"]
    assert all(r["raw"] == HTML * 20 for r in good)


def test_garbage_file_is_a_counted_corrupt_drop(tmp_path):
    path = tmp_path / "junk.warc.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage that is not gzip at all" * 10)
    out = rows(path)
    assert [r["drop_reason"] for r in out] == ["corrupt_warc"]
    path2 = tmp_path / "text.warc"
    path2.write_bytes(b"this is not a warc file\n" * 5)
    assert [r["drop_reason"] for r in rows(path2)] == ["corrupt_warc"]


def test_unreadable_and_missing_inputs_name_the_file(tmp_path):
    with pytest.raises(InputError, match="nope.warc.gz"):
        expand_inputs(tmp_path / "nope.warc.gz")
    with pytest.raises(InputError, match="glob matched no files"):
        expand_inputs(str(tmp_path / "*.warc"))
    odd = tmp_path / "data.bin"
    odd.write_bytes(b"x")
    with pytest.raises(InputError, match="data.bin"):
        expand_inputs(odd)
    # A path that exists but cannot be opened as a file (root ignores chmod, so use a directory).
    unreadable = tmp_path / "crawl.warc.gz"
    unreadable.mkdir()
    with pytest.raises(InputError, match="crawl.warc.gz: cannot open"):
        list(iter_file(unreadable))


def test_size_cap_truncates_and_flags(tmp_path):
    # A 50 MB page: the reader keeps only max_raw_bytes and flags the row.
    big = b"<html><body>" + b"<p>word word word word.</p>" * (50 * 1024 * 1024 // 27) + b"</body></html>"
    path = write_warc(tmp_path / "big.warc", [WarcRecord("https://a.example/big", big),
                                              WarcRecord("https://a.example/small", HTML)])
    out = rows(path)
    assert out[0]["raw_truncated"] is True and len(out[0]["raw"]) == ReadConfig().max_raw_bytes
    assert out[1]["raw_truncated"] is False and out[1]["raw"] == HTML


def test_html_directory_and_corrupt_gzip(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.html").write_bytes(HTML)
    (tmp_path / "sub" / "b.html.gz").write_bytes(gzip.compress(HTML))
    (tmp_path / "sub" / "c.html.gz").write_bytes(gzip.compress(HTML * 50)[:60])
    (tmp_path / "notes.txt").write_text("ignored: not an input format")
    files = expand_inputs(tmp_path)
    assert [f.name for f in files] == ["a.html", "b.html.gz", "c.html.gz"]
    out = pa.concat_tables(list(iter_inputs(tmp_path))).to_pylist()
    assert [r["drop_reason"] for r in out] == [None, None, "corrupt_gzip"]
    assert out[0]["raw"] == HTML == out[1]["raw"] and out[0]["url"].startswith("file://")
    assert "c.html.gz" in out[2]["read_error"]


def test_jsonl_bad_lines_become_drops(tmp_path):
    path = tmp_path / "docs.jsonl"
    lines = [json.dumps({"id": "d1", "text": "first doc", "url": "https://a.example/1"}), "{not json",
             json.dumps({"id": "d3", "title": "no text here"}), "", json.dumps([1, 2]),
             json.dumps({"text": "no id given"}), json.dumps({"id": 7, "text": 12})]
    path.write_text("\n".join(lines) + "\n")
    out = rows(path)
    assert [r["drop_reason"] for r in out] == [None, "invalid_json", "missing_text", "invalid_json", None, "missing_text"]
    assert out[0]["id"] == "d1" and out[0]["text"] == "first doc" and out[0]["url"] == "https://a.example/1"
    assert out[4]["id"] and out[4]["text"] == "no id given"
    validate(pa.Table.from_pylist(out), "document")


def test_parquet_documents(tmp_path):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": ["a", "b", None], "text": ["x", None, "z"], "other": [1, 2, 3]}), path)
    out = rows(path)
    assert [r["drop_reason"] for r in out] == [None, "missing_text", None]
    assert out[0]["id"] == "a" and out[2]["id"] and out[2]["text"] == "z"
    bad = tmp_path / "notext.parquet"
    pq.write_table(pa.table({"body": ["x"]}), bad)
    with pytest.raises(InputError, match="notext.parquet.*'text'"):
        list(iter_file(bad))


def test_mixed_families_refused(tmp_path):
    (tmp_path / "a.html").write_bytes(HTML)
    (tmp_path / "b.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(InputError, match="mix"):
        list(iter_inputs(tmp_path))


def test_sample_crawl_is_deterministic_cached_and_exercises_every_stage(tmp_path):
    import time

    from curate.extract import ExtractStage
    from curate.langid import LangIdStage
    from curate.url_filter import UrlFilterStage

    start = time.perf_counter()
    path = ensure_sample_crawl(tmp_path)
    assert time.perf_counter() - start < 5
    mtime = path.stat().st_mtime_ns
    assert ensure_sample_crawl(tmp_path) == path and path.stat().st_mtime_ns == mtime
    assert [(r.url, r.body) for r in build_records()] == [(r.url, r.body) for r in build_records()]

    stages = [UrlFilterStage({"banned_keywords": ["casino"]}), ExtractStage(), LangIdStage()]
    out = []
    for table in iter_file(path):
        for stage in stages:
            table = stage(table)
        out.extend(table.to_pylist())
    reasons = Counter(r["drop_reason"] for r in out)
    for reason in ("warc_request", "warc_revisit", "warc_metadata", "non_html", "http_not_ok", "empty_body",
                   "binary_content", "url_keyword:casino", "extraction_empty"):
        assert reasons[reason] >= 1, reason
    assert sum(n for r, n in reasons.items() if r and r.startswith("url_blocklist:")) >= 12
    kept = [r for r in out if r["drop_reason"] is None]
    assert {r["lang"] for r in kept} >= {"en", "de", "fr", "es", "it", "zh", "ja"}
    assert sum("@" in r["text"] for r in kept) >= 10  # PII pages survive to the masking stage
    assert len(kept) >= 150


def test_http_content_encoding_is_decoded_and_bad_encoding_does_not_crash(tmp_path):
    path = write_warc(tmp_path / "ce.warc", [
        WarcRecord("https://a.example/1", gzip.compress(HTML), extra_headers=[("Content-Encoding", "gzip")]),
        WarcRecord("https://a.example/2", b"<html>not really gzip</html>", extra_headers=[("Content-Encoding", "gzip")]),
    ])
    out = rows(path)
    assert out[0]["raw"] == HTML and out[0]["drop_reason"] is None
    assert len(out) == 2 and out[1]["drop_reason"] in (None, "bad_content_encoding")


def test_truncated_jsonl_gzip_keeps_read_lines_and_counts_the_tail(tmp_path):
    lines = [json.dumps({"id": f"d{i}", "text": f"document number {i} " * 20}) for i in range(200)]
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    path = tmp_path / "docs.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    out = rows(path)
    good = [r for r in out if r["drop_reason"] is None]
    assert 0 < len(good) < 200 and [r["drop_reason"] for r in out[len(good):]] == ["corrupt_gzip"]
    assert [r["id"] for r in good] == [f"d{i}" for i in range(len(good))]  # no line lost or garbled before the cut
    assert "docs.jsonl.gz" in out[-1]["read_error"] and f"after line {len(good)}" in out[-1]["read_error"]


def test_jsonl_invalid_utf8_is_kept_and_labelled(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'{"id": "a", "text": "caf\xe9 au lait"}\n'
                     b'{"id": "b", "text": "plain"}\n'
                     b'\xff\xfe{"id": "c", "text": "bytes before the object"}\n')
    out = rows(path)
    assert [r["drop_reason"] for r in out] == [None, None, "invalid_json"]
    assert out[0]["text"] == "caf\ufffd au lait" and out[0]["charset_used"] == "utf-8-replace"
    assert out[1]["charset_used"] == "utf-8"


def test_corrupt_parquet_and_empty_files(tmp_path):
    from curate.readers import check_inputs

    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet footer")
    with pytest.raises(InputError, match="broken.parquet: not a readable Parquet file"):
        list(iter_file(bad))
    with pytest.raises(InputError, match="broken.parquet"):
        check_inputs(expand_inputs(tmp_path))  # the driver-side check the job runs before Ray
    # Empty files hold no records: no rows, no error.
    for name in ("empty.warc.gz", "empty.warc", "empty.jsonl"):
        (tmp_path / name).write_bytes(b"")
        assert list(iter_file(tmp_path / name)) == []
