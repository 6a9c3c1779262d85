"""ROUGE-L (LCS F-measure) with tokens that work for Chinese as well as English.

The common `rouge_score` tokenizer keeps only [a-z0-9], so Chinese text gets no
tokens and every novelty check would pass. Here every CJK character is one token and
any other run of letters or digits is one (lower-cased) word.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from curate.words import SPACELESS_RANGES

# Han and kana, one token per character (curate.words' one table); Korean words are spaced.
_CJK = SPACELESS_RANGES
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_CJK_CHAR = re.compile(rf"[{_CJK}]")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def is_cjk_text(text: str) -> bool:
    """True when CJK characters make up at least a third of the letters."""
    letters = sum(ch.isalnum() for ch in text)
    return letters > 0 and len(_CJK_CHAR.findall(text)) * 3 >= letters


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, one DP row at a time (O(len(a)*len(b)) time)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_tokens(candidate: list[str], reference: list[str]) -> float:
    lcs = lcs_length(candidate, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(candidate), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


def rouge_l(candidate: str, reference: str) -> float:
    return rouge_l_tokens(tokenize(candidate), tokenize(reference))


@dataclass
class Neighbours:
    best: float
    texts: list[str]
    scores: list[float]


class InstructionPool:
    """The instructions seen so far, kept tokenized, for nearest-neighbour ROUGE-L."""

    def __init__(self, texts: list[str] | None = None):
        self.texts: list[str] = []
        self._tokens: list[list[str]] = []
        for t in texts or []:
            self.add(t)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str) -> None:
        self.texts.append(text)
        self._tokens.append(tokenize(text))

    def nearest(self, text: str, k: int = 3) -> Neighbours:
        tokens = tokenize(text)
        scored = sorted(((rouge_l_tokens(tokens, ref), i) for i, ref in enumerate(self._tokens)),
                        key=lambda s: (-s[0], s[1]))[:k]
        return Neighbours(best=scored[0][0] if scored else 0.0,
                          texts=[self.texts[i] for _, i in scored], scores=[round(s, 4) for s, _ in scored])
