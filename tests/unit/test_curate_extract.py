"""Extraction: bad pages become drops with reasons; good pages match the ground truth."""
from __future__ import annotations

import gzip
import json
import time

import pyarrow as pa
import pytest

from curate.extract import ExtractStage, decode_html, looks_binary, run_with_time_limit, ExtractTimeout
from curate.extract_quality import token_f1
from curate.readers import iter_file
from curate.sample_crawl import WarcRecord, write_warc
from schemas.validate import validate

ARTICLE = ("<p>The harbour committee met on Tuesday to review the plan for the new ferry pier. "
           "Members agreed that the wooden deck must be replaced before the winter storms arrive.</p>"
           "<p>Fishermen asked for a second ramp, and the committee promised an answer within a month. "
           "The cost will be shared between the town and the regional port authority.</p>")


def page(body: str = ARTICLE, charset: str = "utf-8", title: str = "Ferry pier plan") -> str:
    return (f'<!DOCTYPE html><html><head><meta charset="{charset}"><title>{title}</title></head><body>'
            f'<nav><a href="/">Home</a> <a href="/news">News</a></nav><article><h1>{title}</h1>{body}</article>'
            f'<footer>Copyright 2024. All rights reserved.</footer></body></html>')


def raw_table(raws, charsets=None, truncated=None, urls=None):
    n = len(raws)
    return pa.table({"id": [f"r{i}" for i in range(n)], "url": urls or [f"https://site.example/{i}" for i in range(n)],
                     "raw": pa.array(raws, pa.binary()), "source": ["test"] * n,
                     "charset": pa.array(charsets or [None] * n, pa.string()),
                     "raw_truncated": pa.array(truncated or [False] * n, pa.bool_())})


def test_good_page_becomes_a_document_without_raw():
    out = ExtractStage()(raw_table([page().encode()]))
    assert "raw" not in out.column_names
    row = out.to_pylist()[0]
    assert row["drop_reason"] is None and "ferry pier" in row["text"] and "All rights reserved" not in row["text"]
    assert row["raw_id"] == "r0" and row["id"] == "r0" and row["charset_used"] == "utf-8"
    validate(out, "document")


def test_bad_pages_are_counted_drops():
    raws = [
        b"",                                                   # empty body
        b"   \n\t ",                                           # whitespace only
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,          # binary with an HTML content type
        b"<html>" + b"\x00\x01\x02\x03" * 500,                 # NUL bytes
        b"%PDF-1.7 binary stream",                             # magic number
        b"<html><head><script>var x = 1;</script></head><body><img src='a.png'></body></html>",  # nothing to extract
        page().encode(),                                        # a good one among them
    ]
    out = ExtractStage()(raw_table(raws)).to_pylist()
    assert [r["drop_reason"] for r in out] == ["empty_body", "empty_body", "binary_content", "binary_content",
                                               "binary_content", "extraction_empty", None]
    assert all(r["drop_stage"] == "extract" for r in out[:6]) and all(r["text"] == "" for r in out[:6])


def test_charsets_invalid_utf8_and_wrong_declarations():
    fr = "<p>" + "L'été à Noël, où la forêt était déjà très belle et âgée. " * 6 + "</p>"
    latin1_declared_utf8 = page(fr, charset="utf-8").encode("latin-1")          # wrong declaration
    utf8_declared_latin1 = page(fr, charset="iso-8859-1").encode("utf-8")       # wrong declaration
    header_only = page(fr, charset="").replace('<meta charset="">', "").encode("cp1252")  # charset only in HTTP header
    invalid = page().encode().replace(b"ferry", b"fe\xff\xferry", 1)           # stray invalid bytes
    out = ExtractStage()(raw_table([latin1_declared_utf8, utf8_declared_latin1, header_only, invalid],
                                   charsets=["utf-8", "iso-8859-1", "windows-1252", None])).to_pylist()
    assert [r["drop_reason"] for r in out] == [None] * 4
    for r in out[:3]:
        assert "L'été à Noël" in r["text"] and "\ufffd" not in r["text"], r
    assert out[1]["charset_used"] == "utf-8" and out[2]["charset_used"] == "cp1252"
    assert out[3]["charset_used"] == "utf-8-replace" and "harbour committee" in out[3]["text"]
    text, used = decode_html(b"\xff\xfe\xfa" * 10)
    assert isinstance(text, str) and used


def test_oversized_pages_dropped_not_truncated(tmp_path):
    # A 50 MB page through the real reader: it is capped and flagged, then dropped here.
    big = page("<p>" + "Many words in a very long page. " * (50 * 1024 * 1024 // 32) + "</p>").encode()
    path = write_warc(tmp_path / "big.warc", [WarcRecord("https://a.example/big", big),
                                              WarcRecord("https://a.example/ok", page().encode())])
    table = pa.concat_tables(list(iter_file(path)))
    start = time.perf_counter()
    out = ExtractStage()(table).to_pylist()
    assert time.perf_counter() - start < 10
    assert [r["drop_reason"] for r in out] == ["too_large", None]
    small_cap = ExtractStage({"max_bytes": 100})(raw_table([page().encode()])).to_pylist()
    assert small_cap[0]["drop_reason"] == "too_large"


def test_deeply_nested_html_does_not_crash():
    deep = ("<html><body>" + "<div>" * 20000 + ARTICLE + "</div>" * 20000 + "</body></html>").encode()
    spans = ("<html><body><article>" + "<span><b><i>" * 3000 + "text" + "</i></b></span>" * 3000
             + ARTICLE + "</article></body></html>").encode()
    out = ExtractStage()(raw_table([deep, spans, page().encode()])).to_pylist()
    assert out[0]["drop_reason"] in (None, "extraction_empty", "extraction_error")
    assert out[1]["drop_reason"] in (None, "extraction_empty", "extraction_error")
    assert out[2]["drop_reason"] is None


def _busy(*_args, **_kwargs):
    x = 0
    while True:
        x += 1


def test_time_limit_drops_a_stalling_page(monkeypatch):
    stage = ExtractStage({"timeout_s": 0.2})
    monkeypatch.setattr(stage, "_trafilatura", _busy)
    start = time.perf_counter()
    out = stage(raw_table([page().encode()])).to_pylist()
    assert out[0]["drop_reason"] == "extract_timeout" and time.perf_counter() - start < 2


def test_time_limit_works_off_the_main_thread():
    import threading

    result = {}

    def worker():
        try:
            run_with_time_limit(_busy, 0.1)
        except ExtractTimeout:
            result["timed_out"] = True

    t = threading.Thread(target=worker)
    t.start()
    t.join(5)
    assert result == {"timed_out": True} and not t.is_alive()
    assert run_with_time_limit(lambda: 42, 1.0) == 42


def test_library_exception_is_a_drop(monkeypatch):
    stage = ExtractStage()

    def boom(*_a):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(stage, "_trafilatura", boom)
    assert stage(raw_table([page().encode()])).to_pylist()[0]["drop_reason"] == "extraction_error"


def test_dropped_rows_pass_through_and_documents_are_untouched():
    table = raw_table([b"<html>x</html>", page().encode()]).append_column(
        "drop_reason", pa.array(["url_blocklist:x.example", None], pa.string())).append_column(
        "drop_stage", pa.array(["url_filter", None], pa.string()))
    out = ExtractStage()(table)
    rows = out.to_pylist()
    assert "raw" not in out.column_names and out.num_rows == 2
    assert rows[0]["drop_reason"] == "url_blocklist:x.example" and rows[0]["drop_stage"] == "url_filter"
    assert rows[1]["drop_reason"] is None and rows[1]["text"]
    docs = pa.table({"id": ["d"], "text": ["already text"]})
    assert ExtractStage()(docs).equals(docs)


def test_looks_binary_accepts_text():
    assert not looks_binary(page().encode()) and not looks_binary("日本語のページ".encode("utf-8"))
    assert not looks_binary(page().encode("utf-16"))


def test_extraction_quality_on_shared_pages(shared_data):
    web = shared_data / "web"
    truth = json.loads((web / "ground-truth.json").read_text(encoding="utf-8"))
    keys = sorted(truth)[:12]
    raws = [gzip.decompress((web / "html" / f"{k}.html.gz").read_bytes()) for k in keys]
    out = ExtractStage()(raw_table(raws, urls=[truth[k]["url"] for k in keys])).to_pylist()
    scores = [token_f1(r["text"], truth[k]["articleBody"]) for r, k in zip(out, keys)]
    assert sum(scores) / len(scores) >= 0.9, scores
    assert token_f1("a b c", "a b c") == 1.0 and token_f1("a", "b") == 0.0


def test_bad_records_through_the_warc_reader(tmp_path):
    # The same bad inputs as they arrive in a crawl: each is one row with a counted reason.
    path = write_warc(tmp_path / "bad.warc.gz", [
        WarcRecord("https://a.example/empty", b""),
        WarcRecord("https://a.example/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 16),
        WarcRecord("https://a.example/noise", bytes((i * 7919) % 256 for i in range(8192))),
        WarcRecord("https://a.example/bad-utf8", page().encode().replace(b"ferry", b"fe\xff\xferry", 1)),
        WarcRecord("https://a.example/latin1", page("<p>" + "Grüße aus Köln, schöne Straßen. " * 12 + "</p>")
                   .encode("latin-1"), content_type="text/html; charset=utf-8"),
    ])
    out = ExtractStage()(pa.concat_tables(list(iter_file(path)))).to_pylist()
    assert [r["drop_reason"] for r in out] == ["empty_body", "binary_content", "binary_content", None, None]
    assert out[3]["charset_used"] == "utf-8-replace" and "harbour committee" in out[3]["text"]
    assert "Grüße aus Köln" in out[4]["text"]


def test_cjk_page_needs_fifty_han_kana_or_hangul_characters():
    from curate.extract import CJK_PAGE_MIN_CHARS, is_cjk_page

    latin = "<html><body><p>" + "Caf\u00e9 na\u00efve \u2014 \u201cquoted\u201d text. " * 400 + "</p>"
    assert not is_cjk_page(latin)
    for chars in ("\u4e2d", "\u3042", "\ud55c"):  # Han, hiragana, Hangul
        assert not is_cjk_page(latin + chars * (CJK_PAGE_MIN_CHARS - 1))
        assert is_cjk_page(latin + chars * CJK_PAGE_MIN_CHARS)
    # Characters that share the UTF-8 lead bytes but are not CJK text (ideographic space,
    # CJK punctuation, Yi) pass the fast byte bound, and the exact count still says no.
    assert not is_cjk_page(latin + "\u3000\u3001\ua000" * 100 + "\u4e2d" * 10)
    assert not is_cjk_page("\udc80" * 100)  # a lone surrogate from a lenient decode does not crash


def test_pruned_tags_go_before_trafilatura_and_the_text_after_them_stays():
    from lxml import etree

    from curate.extract import ExtractConfig, pruned_tree

    page = ("<html><body><article><p>The council met on Tuesday to vote on the plan for the river park "
            "<script>var tracking = 'SCRIPTWORD';</script> and the vote passed after long debate.</p>"
            "<style>.x{color:red}</style><noscript>NOSCRIPTWORD</noscript></article></body></html>")
    tree = pruned_tree(page, ["script", "style", "noscript"])
    text = etree.tostring(tree, encoding="unicode", method="text")
    assert "SCRIPTWORD" not in text and "NOSCRIPTWORD" not in text and "color:red" not in text
    assert "and the vote passed after long debate." in text  # a pruned element's tail is page text
    assert pruned_tree("", ["script"]) == ""  # nothing to parse: handed on as it was
    assert ExtractConfig.from_dict({"prune_tags": []}).prune_tags == []
    with pytest.raises(ValueError, match="extract.prune_tags"):
        ExtractConfig.from_dict({"prune_tags": "script"})
