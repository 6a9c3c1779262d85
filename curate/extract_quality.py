"""Token-level F1 of extracted text against a reference: the extraction-quality measure
used by the tests and bench/bench_extract_langid.py."""
from __future__ import annotations

import re
from collections import Counter

from curate.words import SPACELESS_RANGES

# Word characters, lower-cased. Han and kana count one token per character so that
# spaceless scripts are not scored as one giant token per sentence (curate.words' table;
# Korean puts spaces between words, so Hangul words stay words).
_TOKEN = re.compile(f"[{SPACELESS_RANGES}]|[^\\W{SPACELESS_RANGES}]+", re.UNICODE)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def token_f1(predicted: str, reference: str) -> float:
    """Harmonic mean of token precision and recall (bag of tokens); 1.0 when both are empty."""
    return bag_f1(Counter(tokens(predicted or "")), Counter(tokens(reference or "")))


def bag_f1(p: Counter, r: Counter) -> float:
    """F1 of two bags of tokens; 1.0 when both are empty."""
    if not p and not r:
        return 1.0
    common = sum((p & r).values())
    if not common:
        return 0.0
    precision, recall = common / sum(p.values()), common / sum(r.values())
    return 2 * precision * recall / (precision + recall)


def char_f1(predicted: str, reference: str) -> float:
    """F1 over the bag of non-whitespace characters (case kept).

    The measure for Chinese and Japanese references whose line breaks and spaces follow
    the page layout rather than the text: whitespace is ignored, and every character,
    punctuation included, is one token (so a dropped sentence costs its full length).
    1.0 when both are empty.
    """
    return bag_f1(Counter(ch for ch in (predicted or "") if not ch.isspace()),
                  Counter(ch for ch in (reference or "") if not ch.isspace()))
