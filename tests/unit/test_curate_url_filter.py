"""URL filter: which rule fired is recorded; labels are sane."""
from __future__ import annotations

import pyarrow as pa
import pytest

from curate.url_filter import UrlFilterStage, load_blocklist, registered_domain, url_score


def run(stage, urls):
    table = pa.table({"id": [str(i) for i in range(len(urls))], "url": pa.array(urls, pa.string())})
    return stage(table).to_pylist()


def test_blocklist_matches_domain_and_subdomains_only(tmp_path):
    bl = tmp_path / "adult" / "domains"
    bl.parent.mkdir()
    bl.write_text("# UT1 style list\nbad.example\nWWW.Other-Bad.example  # trailing comment\n\n")
    stage = UrlFilterStage({"blocklist_files": [str(bl)]})
    out = run(stage, ["http://bad.example/x", "https://a.b.bad.example/", "http://notbad.example/",
                      "http://www.other-bad.example/p", "http://bad.example.org/", None])
    assert [r["drop_reason"] for r in out] == ["url_blocklist:bad.example", "url_blocklist:bad.example", None,
                                               "url_blocklist:other-bad.example", None, None]
    assert out[0]["drop_stage"] == "url_filter"
    assert out[5]["url_score"] is None and out[5]["domain"] is None


def test_builtin_blocklist_default_and_disable():
    url = "http://promo.hot-singles-nearby.example/x"
    assert run(UrlFilterStage(), [url])[0]["drop_reason"] == "url_blocklist:hot-singles-nearby.example"
    assert run(UrlFilterStage({"blocklist_files": []}), [url])[0]["drop_reason"] is None


def test_keywords_regex_and_label_only_mode():
    cfg = {"blocklist_files": [], "banned_keywords": ["casino"], "regex_rules": {"session_id": r"[?&]sid=\d+"}}
    urls = ["https://news.example.com/CASINO-night", "https://news.example.com/a?sid=123", "https://news.example.com/ok"]
    assert [r["drop_reason"] for r in run(UrlFilterStage(cfg), urls)] == ["url_keyword:casino", "url_regex:session_id", None]
    labelled = run(UrlFilterStage({**cfg, "drop": False}), urls)
    assert [r["url_block_reason"] for r in labelled] == ["url_keyword:casino", "url_regex:session_id", None]
    assert all(r.get("drop_reason") is None for r in labelled)


def test_bad_config_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="regex_rules.broken"):
        UrlFilterStage({"regex_rules": {"broken": "("}})
    with pytest.raises(ValueError, match="unknown option 'blocklist' .did you mean 'blocklist_files'"):
        UrlFilterStage({"blocklist": "x"})
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        UrlFilterStage({"blocklist_files": [str(tmp_path / "missing.txt")]})


def test_already_dropped_rows_keep_their_first_reason():
    table = pa.table({"id": ["a", "b"], "url": ["http://casino-jackpot-royal.example/", "http://ok.example.com/"],
                      "drop_reason": pa.array(["warc_request", None], pa.string()),
                      "drop_stage": pa.array(["read", None], pa.string())})
    out = UrlFilterStage()(table).to_pylist()
    by_id = {r["id"]: r for r in out}
    assert by_id["a"]["drop_reason"] == "warc_request" and by_id["b"]["drop_reason"] is None


def test_url_score_orders_clean_above_noisy_and_stays_in_range():
    clean = url_score("https://www.example.com/news/2024/story-title")
    noisy = url_score("http://x1-y2-z3-w4.deals.example.xyz/a/b/c/d/e/f/g/1234567890?sid=1&a=2&b=3&c=4&d=5&e=6")
    ip = url_score("http://192.168.0.1/index.html")
    good = url_score("http://1.2.3.example.org/a/b/c/d/e/f?x=1", frozenset({"example.org"}))
    assert clean > 0.9 and noisy < 0.4 and ip < clean and good == 1.0
    for u in ["", "not a url", "ftp://files.example.com/x", "http://[::1]/", "https://a.b/" + "x/" * 200]:
        assert 0.0 <= url_score(u) <= 1.0


def test_domain_label():
    assert registered_domain("a.b.example.co.uk") == "example.co.uk"
    assert registered_domain("blog.example.com") == "example.com"
    assert registered_domain("10.0.0.1") == "10.0.0.1"
    out = run(UrlFilterStage({"blocklist_files": []}), ["https://news.bbc.co.uk/x", "http://[broken"])
    assert out[0]["domain"] == "bbc.co.uk" and out[1]["domain"] == ""


def test_blocklist_is_cached(tmp_path):
    bl = tmp_path / "bl.txt"
    bl.write_text("a.example\n")
    assert load_blocklist(bl) is load_blocklist(bl)
