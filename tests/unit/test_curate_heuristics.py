"""Known-answer tests of the heuristic labels (values worked out by hand in the comments)."""
from __future__ import annotations

import pyarrow as pa
import pytest

from curate.heuristics import (
    DEFAULT_THRESHOLDS,
    LABEL_TYPES,
    HeuristicsStage,
    Thresholds,
    document_labels,
    ngram_char_fractions,
)
from curate.stage import mark_drops
from curate.words import words


def test_words_split_latin_on_spaces_and_cjk_per_character():
    assert words("Hello, world! -- 你好。日本語のテキスト ... #tag 123") == [
        "Hello,", "world!", "你", "好", "日", "本", "語", "の", "テ", "キ", "ス", "ト", "#tag", "123"]
    # Hangul is written with spaces: split like Latin.
    assert words("안녕하세요 세계") == ["안녕하세요", "세계"]


def test_word_count_and_mean_word_length():
    labels = document_labels("Hello, world! This is a test.", "en")
    # 6 words; stripped lengths 5+5+4+2+1+4 = 21
    assert labels["gopher_word_count"] == 6
    assert labels["gopher_mean_word_length"] == pytest.approx(21 / 6)


def test_symbol_bullet_ellipsis_alpha_ratios():
    # 8 words, one "#" and one "..." -> 2 / 8
    assert document_labels("a b c d # e f g h ...")["gopher_symbol_word_ratio"] == pytest.approx(0.25)
    labels = document_labels("- one\n• two\nthree...\nfour")
    assert labels["gopher_bullet_lines_ratio"] == pytest.approx(2 / 4)
    assert labels["gopher_ellipsis_lines_ratio"] == pytest.approx(1 / 4)
    # "abc", "123", "4.5", "def": two of four hold a letter
    assert document_labels("abc 123 4.5 def")["gopher_alpha_words_ratio"] == pytest.approx(0.5)


def test_stop_words_per_language():
    assert document_labels("the cat and the dog with a hat", "en")["gopher_stop_words"] == 4
    assert document_labels("the cat and the dog", "xx")["gopher_stop_words"] is None
    # 的 x2, 是 x1: FineWeb 2's zh list holds single characters (and not 我)
    assert document_labels("我的书是新的", "zh")["gopher_stop_words"] == 3


def test_duplicate_lines_and_paragraphs():
    labels = document_labels("aaa\nbbb\naaa\ncc")
    assert labels["gopher_dup_line_frac"] == pytest.approx(1 / 4)
    assert labels["gopher_dup_line_char_frac"] == pytest.approx(3 / 11)
    # FineWeb: repeated line chars over all chars without newlines (14 - 3 = 11)
    assert labels["fineweb_char_dup_ratio"] == pytest.approx(3 / 11)
    labels = document_labels("p one\n\np two\n\np one")
    assert labels["gopher_dup_para_frac"] == pytest.approx(1 / 3)
    assert labels["gopher_dup_para_char_frac"] == pytest.approx(5 / 15)


def test_top_ngram_char_fraction():
    # "x yy" occurs twice, covering words 0..3: 1+2+1+2 = 6 of 9 characters
    fr = ngram_char_fractions("x yy x yy zzz".split())
    assert fr["gopher_top_2gram_char_frac"] == pytest.approx(6 / 9)
    assert fr["gopher_top_3gram_char_frac"] == 0.0  # no 3-gram repeats
    # Overlapping occurrences count each character once: "a b" x3 covers all 6 characters.
    assert ngram_char_fractions("a b a b a b".split())["gopher_top_2gram_char_frac"] == pytest.approx(1.0)


def test_duplicated_ngram_char_fraction():
    # "a b c d e" repeated once: its second occurrence covers 5 characters of 15
    # (xx and yyy differ, so no 6-gram repeats)
    fr = ngram_char_fractions("a b c d e xx a b c d e yyy".split())
    assert fr["gopher_dup_5gram_char_frac"] == pytest.approx(5 / 15)
    # Overlapping repeats count each character once: "a a a a a a a" (7 words) has 5-gram
    # repeats starting at 1 and 2, covering words 1..6.
    assert ngram_char_fractions(["a"] * 7)["gopher_dup_5gram_char_frac"] == pytest.approx(6 / 7)
    assert fr["gopher_dup_6gram_char_frac"] == 0.0
    assert ngram_char_fractions(["one"]) == {k: 0.0 for k in ngram_char_fractions([])}


def test_cjk_repetition_and_null_mean_word_length():
    text = "我们的产品是最好的。我们的产品是最好的。今天天气很好！"
    labels = document_labels(text, "zh")
    assert labels["gopher_word_count"] == 24  # 9 + 9 + 6 characters, punctuation is not a word
    assert labels["gopher_mean_word_length"] is None  # not meaningful for CJK
    # Word n-grams of CJK text are measured as character n-grams 1.5x as long: the "5-gram"
    # is 8 characters; the repeated 9-character sentence holds two repeated 8-grams.
    assert labels["gopher_dup_5gram_char_frac"] == pytest.approx(9 / 24)
    # The "4-gram" is 6 characters: the most frequent ones occur twice, 12 of 24 characters.
    assert labels["gopher_top_4gram_char_frac"] == pytest.approx(12 / 24)
    assert labels["c4_sentence_count"] == 3  # 。 。 ！ need no following space
    assert labels["gopher_stop_words"] == 6  # 的 x4, 是 x2 (FineWeb 2's list)


def test_c4_and_fineweb_labels():
    text = "Ends here.\nNo end\nQuote\"\n中文。\n" + "x" * 40
    labels = document_labels(text)
    assert labels["fineweb_line_punct_ratio"] == pytest.approx(3 / 5)
    assert labels["c4_no_terminal_punct_lines_ratio"] == pytest.approx(2 / 5)
    # lines of <= 30 characters: 4 of 5
    assert labels["fineweb_short_line_ratio"] == pytest.approx(4 / 5)
    assert document_labels("One. Two! Three? 四。五！")["c4_sentence_count"] == 5
    assert document_labels("a\nb\nc d")["fineweb_list_ratio"] == pytest.approx(2 / 4)
    odd = document_labels("Lorem ipsum dolor.\nvar x = {a: 1};\nPlease enable JavaScript.\nRead our Privacy Policy.")
    assert odd["c4_lorem_ipsum"] and odd["c4_curly_bracket"]
    assert odd["c4_javascript_lines"] == 1 and odd["c4_policy_lines"] == 1
    assert not document_labels("plain text.")["c4_curly_bracket"]
    assert document_labels("a" * 1001)["c4_long_word"]


def test_empty_text_gives_zero_not_errors():
    labels = document_labels("")
    assert labels["gopher_word_count"] == 0 and labels["fineweb_list_ratio"] == 0.0


def test_stage_adds_typed_labels_and_skips_dropped_rows():
    table = pa.table({"id": ["a", "b"], "text": ["The cat sat on the mat.", "junk"], "lang": ["en", "en"]})
    table = mark_drops(table, [False, True], "earlier_rule", "earlier")
    out = HeuristicsStage()(table)
    assert out.num_rows == 2
    for name, type_ in LABEL_TYPES.items():
        assert out.schema.field(name).type == type_
    rows = {r["id"]: r for r in out.to_pylist()}
    assert rows["a"]["gopher_word_count"] == 6 and rows["a"]["gopher_stop_words"] == 2
    assert rows["b"]["gopher_word_count"] is None and rows["b"]["drop_reason"] == "earlier_rule"


def test_stage_on_empty_table_still_declares_columns():
    out = HeuristicsStage()(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}))
    assert set(LABEL_TYPES) <= set(out.column_names)


def test_thresholds_hold_published_defaults():
    t = DEFAULT_THRESHOLDS
    assert (t.gopher_min_words, t.gopher_max_words, t.gopher_min_stop_words) == (50, 100_000, 2)
    assert (t.gopher_max_dup_5gram_char_frac, t.gopher_max_dup_10gram_char_frac) == (0.15, 0.10)
    assert (t.fineweb_min_line_punct_ratio, t.fineweb_max_short_line_ratio, t.fineweb_max_char_dup_ratio) == (0.12, 0.67, 0.01)
    assert HeuristicsStage({"fineweb_short_line_length": 10}).thresholds == Thresholds(fineweb_short_line_length=10)
