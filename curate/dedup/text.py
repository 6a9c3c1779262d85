"""Text normalisation, the exact-dedup key, and shingles for MinHash."""
from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit, urlunsplit

from curate.words import CJK_RANGES

# Han, kana, Hangul (curate.words' one table): texts in these scripts get character shingles.
_CJK = re.compile(f"[{CJK_RANGES}]")
_WORD = re.compile(r"\w+")
_PUNCT = re.compile(r"[^\w\s]+")

# Why a text got fewer shingles than usual (null: a normal text).
RULE_SHORT = "short_text_one_shingle"  # fewer tokens than the n-gram size: the whole text is one shingle
RULE_EMPTY = "empty_text_exact_only"  # no tokens: no shingles, so only exact dedup applies


def normalize_for_exact(text: str, strip_punctuation: bool = False) -> str:
    """Lower-case, optionally drop punctuation, collapse runs of whitespace."""
    text = text.lower()
    if strip_punctuation:
        text = _PUNCT.sub(" ", text)
    return " ".join(text.split())


def exact_key(text: str, strip_punctuation: bool = False) -> str:
    """128 bits of SHA-1 of the normalised text: collisions are negligible at any corpus size."""
    return hashlib.sha1(normalize_for_exact(text, strip_punctuation).encode("utf-8")).hexdigest()[:32]


def normalize_url(url: str | None) -> str | None:
    """Scheme and host lower-cased, fragment and trailing slash dropped; None for empty input."""
    if not url or not url.strip():
        return None
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/") or ""
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def is_cjk(text: str, ratio: float) -> bool:
    """True when at least `ratio` of the non-space characters are CJK."""
    chars = len(text) - sum(c.isspace() for c in text)
    if chars == 0:
        return False
    return len(_CJK.findall(text)) / chars >= ratio


def _tokens(text: str, ngram: int, cjk_ngram: int, cjk_ratio: float) -> tuple[list[str], int, str]:
    lowered = text.lower()
    if is_cjk(lowered, cjk_ratio):
        return [c for w in _WORD.findall(lowered) for c in w], cjk_ngram, ""
    return _WORD.findall(lowered), ngram, " "


def shingle_rule(text: str, ngram: int, cjk_ngram: int, cjk_ratio: float) -> str | None:
    """The short/empty rule `shingles` applies to `text`, without building the shingles."""
    tokens, n, _ = _tokens(text, ngram, cjk_ngram, cjk_ratio)
    return RULE_EMPTY if not tokens else RULE_SHORT if len(tokens) < n else None


def shingles(text: str, ngram: int, cjk_ngram: int, cjk_ratio: float) -> tuple[set[bytes], str | None]:
    """The set of n-gram shingles (UTF-8 bytes) of `text` and the rule applied (None if normal).

    Latin-like text: lower-cased words (\\w+), `ngram` per shingle, joined by one space.
    CJK text: word characters without spaces, `cjk_ngram` per shingle.
    """
    tokens, n, sep = _tokens(text, ngram, cjk_ngram, cjk_ratio)
    if not tokens:
        return set(), RULE_EMPTY
    if len(tokens) < n:
        return {sep.join(tokens).encode("utf-8")}, RULE_SHORT
    return {sep.join(tokens[i:i + n]).encode("utf-8") for i in range(len(tokens) - n + 1)}, None
