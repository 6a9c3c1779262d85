"""Word splitting that works for space-less scripts.

Chinese and Japanese put no spaces between words, so a whitespace split would turn a
whole paragraph into one "word". We treat every CJK ideograph, kana and CJK
punctuation-free character as one word of its own, and split everything else on
whitespace. That is the usual character-level convention for CJK statistics: cheap,
dictionary-free and deterministic. Hangul is written with spaces, so Korean is split
on whitespace like Latin scripts.

A "word" for the statistics is a token that holds at least one letter or digit;
tokens made only of punctuation or symbols ("-", "...", "»", "#") are not words.
"""
from __future__ import annotations

import re
import unicodedata

# The one CJK character table of the project (issue 12): regex class bodies per script.
# Han: unified ideographs, extension A, compatibility ideographs, extensions B-F.
HAN_RANGES = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
# Kana: Hiragana, Katakana, Katakana phonetic extensions, halfwidth Katakana.
KANA_RANGES = "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f"
# Hangul: syllables, Jamo, compatibility Jamo. Korean puts spaces between words, so Hangul
# is CJK for script detection but NOT one word per character (see SPACELESS_RANGES).
HANGUL_RANGES = "\uac00-\ud7af\u1100-\u11ff\u3130-\u318f"
# Scripts written without spaces between words: one character = one word here.
SPACELESS_RANGES = HAN_RANGES + KANA_RANGES
CJK_RANGES = SPACELESS_RANGES + HANGUL_RANGES

HAN_CHAR = re.compile(f"[{HAN_RANGES}]")
KANA_CHAR = re.compile(f"[{KANA_RANGES}]")
HANGUL_CHAR = re.compile(f"[{HANGUL_RANGES}]")
# Historical name, kept for callers: a character of a space-less script (Han or kana).
CJK_CHAR = re.compile(f"[{SPACELESS_RANGES}]")
_CJK_RANGES = SPACELESS_RANGES
# One CJK character, or a run of characters that are neither whitespace nor CJK.
TOKEN = re.compile(f"[{_CJK_RANGES}]|[^\\s{_CJK_RANGES}]+")


def _is_punct(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat[0] in "PS"  # punctuation or symbol (incl. "#", "…", "•", "|")


def tokens(text: str) -> list[str]:
    """All tokens: words and punctuation-only runs, CJK characters one by one."""
    return TOKEN.findall(text)


_WORD_CHAR = re.compile(r"[^\W_]")  # a letter or digit in any script


def is_word(token: str) -> bool:
    """A token counts as a word when it holds a letter or a digit."""
    return _WORD_CHAR.search(token) is not None


def words(text: str) -> list[str]:
    """Words of `text` (see module doc): CJK characters one by one, others split on whitespace."""
    search = _WORD_CHAR.search
    return [t for t in TOKEN.findall(text) if search(t) is not None]


def strip_punct(word: str) -> str:
    """The word without leading/trailing punctuation (for stop-word lookup)."""
    start, end = 0, len(word)
    while start < end and _is_punct(word[start]):
        start += 1
    while end > start and _is_punct(word[end - 1]):
        end -= 1
    return word[start:end]


def is_cjk(token: str) -> bool:
    return len(token) == 1 and CJK_CHAR.match(token) is not None


def spaceless_share(tokens_: list[str]) -> float:
    """Share of `tokens_` that are single Han/kana characters (0.0 for no tokens)."""
    if not tokens_:
        return 0.0
    match = CJK_CHAR.match
    return sum(1 for t in tokens_ if len(t) == 1 and match(t) is not None) / len(tokens_)
