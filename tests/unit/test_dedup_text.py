"""Normalisation, exact keys, CJK detection, shingle rules and config checks."""
from __future__ import annotations

import pytest

from curate.dedup.config import DedupConfig, optimal_bands_rows
from curate.dedup.text import RULE_EMPTY, RULE_SHORT, exact_key, is_cjk, normalize_url, shingle_rule, shingles


def test_exact_key_ignores_case_and_whitespace_only():
    assert exact_key("Hello   World\n") == exact_key("hello world")
    assert exact_key("Hello, world!") != exact_key("hello world")
    assert exact_key("Hello, world!", strip_punctuation=True) == exact_key("hello world", strip_punctuation=True)


def test_normalize_url():
    assert normalize_url("HTTPS://Example.COM/a/b/#frag") == "https://example.com/a/b"
    assert normalize_url("  ") is None and normalize_url(None) is None


def test_cjk_detection_by_ratio():
    assert is_cjk("数据去重是重要步骤", 0.3)
    assert not is_cjk("plain english text with one 字", 0.3)
    assert not is_cjk("", 0.3)


def test_word_and_character_shingles():
    words, rule = shingles("The cat sat on the mat today", 5, 3, 0.3)
    assert rule is None and b"the cat sat on the" in words and len(words) == 3
    chars, rule = shingles("数据去重，很重要", 5, 3, 0.3)
    assert rule is None and "数据去".encode() in chars and "重很重".encode() in chars  # punctuation dropped


def test_short_and_empty_rules():
    short, rule = shingles("only three words", 5, 3, 0.3)
    assert rule == RULE_SHORT and short == {b"only three words"}
    empty, rule = shingles("  ... !!", 5, 3, 0.3)
    assert rule == RULE_EMPTY and empty == set()
    assert shingle_rule("only three words", 5, 3, 0.3) == RULE_SHORT
    assert shingle_rule("one two three four five", 5, 3, 0.3) is None


def test_config_checks_and_param_search():
    assert DedupConfig().lsh_params == (14, 8)
    auto = DedupConfig(bands=None, rows=None, threshold=0.8)
    from datasketch.lsh import _optimal_param

    assert auto.lsh_params == optimal_bands_rows(0.8, 112) == tuple(_optimal_param(0.8, 112, 0.5, 0.5))
    with pytest.raises(ValueError, match="unknown option"):
        DedupConfig.from_any({"thresold": 0.8})
    with pytest.raises(ValueError, match="bands x rows"):
        DedupConfig(bands=20, rows=8)
    with pytest.raises(ValueError, match="keep"):
        DedupConfig(keep="shortest")
    with pytest.raises(ValueError, match="both bands and rows"):
        DedupConfig(bands=None)
    with pytest.raises(ValueError, match="shuffle_blocks"):
        DedupConfig(shuffle_blocks=0)
