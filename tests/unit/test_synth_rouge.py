"""ROUGE-L: tokenization (CJK characters, English words) and LCS against a direct computation."""
from __future__ import annotations

import itertools
import random

import pytest

from synth.rouge import InstructionPool, is_cjk_text, lcs_length, rouge_l, tokenize


def direct_lcs(a: list[str], b: list[str]) -> int:
    """Longest common subsequence by trying subsequences of the shorter list, longest first."""
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    for k in range(len(short), 0, -1):
        for idx in itertools.combinations(range(len(short)), k):
            sub = [short[i] for i in idx]
            it = iter(long_)
            if all(tok in it for tok in sub):
                return k
    return 0


def test_lcs_matches_direct_computation_on_random_sequences():
    rng = random.Random(7)
    for _ in range(200):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 9))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 9))]
        assert lcs_length(a, b) == direct_lcs(a, b), (a, b)


def test_rouge_l_is_f_measure_of_lcs():
    cand = "Give me three antonyms of the word happy."
    ref = "Give three synonyms for the word happy."
    c, r = tokenize(cand), tokenize(ref)
    lcs = direct_lcs(c, r)
    p, rec = lcs / len(c), lcs / len(r)
    assert rouge_l(cand, ref) == pytest.approx(2 * p * rec / (p + rec))
    assert rouge_l(cand, cand) == pytest.approx(1.0)
    assert rouge_l(cand, "") == 0.0


def test_chinese_uses_character_tokens():
    assert tokenize("给出下面词语的同义词") == list("给出下面词语的同义词")
    # Mixed text: CJK characters one by one, Latin runs as lower-cased words, punctuation dropped.
    assert tokenize("根据描述，生成SQL语句 for MySQL 8") == ["根", "据", "描", "述", "生", "成", "sql", "语", "句", "for", "mysql", "8"]
    # Two near-identical Chinese instructions are similar; the rouge_score tokenizer would give 0.
    assert rouge_l("给出下面词语的同义词", "给出下列词语的反义词") > 0.7
    assert is_cjk_text("给出下面词语的同义词") and not is_cjk_text("Give a synonym of the word.")


def test_pool_returns_most_similar_first():
    pool = InstructionPool(["Translate the sentence into French.", "Write a poem about the sea.",
                            "Translate the following sentence into German."])
    near = pool.nearest("Translate this sentence into Spanish.", k=2)
    assert near.texts[0].startswith("Translate") and near.texts[1].startswith("Translate")
    assert near.best == near.scores[0] >= near.scores[1]
    assert near.best == pytest.approx(rouge_l("Translate this sentence into Spanish.", near.texts[0]), abs=1e-4)
