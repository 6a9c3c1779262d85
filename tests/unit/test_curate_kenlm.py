"""KenLM perplexity backend (CCNet's scorer): needs the optional `kenlm` package."""
from __future__ import annotations

import math
import random
from collections import Counter

import pyarrow as pa
import pytest

from curate.kenlm_scorer import is_kenlm_model, normalize_lines
from curate.perplexity import PerplexityConfig


def _unigram_arpa(path, corpus: list[str], unk_log10: float = -6.0) -> dict[str, float]:
    """A unigram ARPA model of `corpus` (add-one counts, one `</s>` per line): each word's
    log10 probability, returned for computing expected perplexities by hand. KenLM loads
    only models of order two or more, so it carries one bigram ("bridge harbour") that the
    texts scored below never contain; every other pair backs off to the unigrams with
    weight 1 (log10 backoff 0)."""
    counts = Counter()
    for text in corpus:
        for words in normalize_lines(text):
            counts.update(words)
            counts["</s>"] += 1
    total = sum(counts.values()) + len(counts)
    log10 = {w: math.log10((c + 1) / total) for w, c in counts.items()}
    log10["<unk>"] = unk_log10
    lines = ["\\data\\", f"ngram 1={len(log10) + 1}", "ngram 2=1", "", "\\1-grams:", "-99\t<s>\t0"]
    lines += [f"{p:.6f}\t{w}\t0" for w, p in sorted(log10.items())]
    lines += ["", "\\2-grams:", f"{log10['harbour'] + 0.1:.6f}\tbridge harbour"]
    path.write_text("\n".join(lines + ["", "\\end\\", ""]), encoding="utf-8")
    return log10


def test_kenlm_model_files_are_told_apart_from_hf_directories():
    assert is_kenlm_model("/m/en.arpa") and is_kenlm_model("/m/en.arpa.gz") and is_kenlm_model("/m/zh.BIN")
    assert not is_kenlm_model("/m/qwen-0.5b") and not is_kenlm_model("reference") and not is_kenlm_model(None)
    assert normalize_lines("Room 42 opened\n\n  新闻 today ") == [["room", "00", "opened"], ["新", "闻", "today"]]


def test_kenlm_ppl_is_the_per_token_average_over_lines_and_garbage_scores_worse(tmp_path):
    pytest.importorskip("kenlm", reason="the optional kenlm package is not installed")
    from curate.perplexity import SCORED, TRUNCATED, PerplexityStage

    rng = random.Random(0)
    vocabulary = "the river town opened a new library near old harbour bridge market".split()
    corpus = [" ".join(rng.choice(vocabulary) for _ in range(12)) for _ in range(200)]
    log10 = _unigram_arpa(tmp_path / "lm.arpa", corpus)
    stage = PerplexityStage(PerplexityConfig(model_path=str(tmp_path / "lm.arpa"), max_tokens=None))
    assert stage.kenlm is not None  # no torch model loaded

    text = "The river opened\nold market"
    words = [["the", "river", "opened"], ["old", "market"]]
    expected = sum(log10[w] for line in words for w in line) + 2 * log10["</s>"]
    ppl, tokens, status = stage.score([text, "", "qzx vvkp wrrt ubnm\nplok"])
    assert tokens[0] == 7 and status[0] == SCORED  # five words and two </s>
    assert ppl[0] == pytest.approx(10 ** (-expected / 7), rel=1e-4)
    assert ppl[1] is None and status[1] == "empty"
    assert ppl[2] > 100 * ppl[0]  # out-of-vocabulary words score as <unk>

    capped = PerplexityStage(PerplexityConfig(model_path=str(tmp_path / "lm.arpa"), max_tokens=4))
    _, tokens, status = capped.score([text])
    assert status == [TRUNCATED] and tokens == [4 + 2]  # the head's four words, each line's </s>

    table = stage.process(pa.table({"text": [text, "\ufffd\ufffd \ufffd"]}))
    assert table.column("ppl_status").to_pylist() == [SCORED, "unmappable"]


def test_a_kenlm_model_without_the_package_is_a_config_error(tmp_path, monkeypatch):
    from curate import perplexity

    monkeypatch.setattr(perplexity, "kenlm_available", lambda: False)
    with pytest.raises(ValueError, match=r"perplexity.model_path .*lm.arpa is a KenLM model.*pip install kenlm"):
        PerplexityConfig(model_path=str(tmp_path / "lm.arpa"))
