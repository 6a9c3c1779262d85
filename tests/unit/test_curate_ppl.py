"""Perplexity labels: exact exp(mean token NLL), strided windows, batching, bad input, buckets."""
from __future__ import annotations

import math
import random

import pyarrow as pa
import pytest

from curate.perplexity import PerplexityConfig, PerplexityStage, windows
from curate.ppl_buckets import BucketConfig, assign_buckets, compute_cutoffs
from curate.reference_lm import reference_corpus, train_reference_lm
from curate.sample_crawl import paragraphs


@pytest.fixture(scope="module")
def reference_lm(tmp_path_factory):
    """A reference LM trained briefly on the reference corpus (fewer steps than the default)."""
    return train_reference_lm(tmp_path_factory.mktemp("ref") / "lm", reference_corpus(60), vocab_size=1024, steps=120)


def _stage(path, **options) -> PerplexityStage:
    return PerplexityStage(PerplexityConfig(model_path=str(path), **options))


def _direct_nll(stage: PerplexityStage, ids: list[int]) -> list[float]:
    """NLL of tokens 1..n-1 from one unpadded forward pass."""
    import torch

    with torch.no_grad():
        logits = stage.model(input_ids=torch.tensor([ids])).logits[0]
    return torch.nn.functional.cross_entropy(logits[:-1].float(), torch.tensor(ids[1:]), reduction="none").tolist()


def test_windows_score_every_target_once():
    for n, window, stride in [(2, 8, 4), (8, 8, 4), (9, 8, 4), (40, 8, 3), (33, 16, 16), (17, 4, 1)]:
        targets = [p for begin, end, first in windows(n, window, stride) for p in range(first, end)]
        assert targets == list(range(1, n)), (n, window, stride)
        assert all(end - begin <= window for begin, end, _ in windows(n, window, stride))


def test_ppl_equals_exp_mean_token_nll(reference_lm):
    stage = _stage(reference_lm, max_tokens=None)
    texts = paragraphs(random.Random(3), "en", 5) + ["短い文。", "Ein kurzer Satz über die Stadt."]
    ppl, tokens, status = stage.score(texts)
    for text, value, count in zip(texts, ppl, tokens):
        ids = stage.tokenizer(text, add_special_tokens=False)["input_ids"]
        nll = _direct_nll(stage, ids)
        assert count == len(ids) - 1
        assert value == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-4)
    assert set(status) == {"scored"}


def test_strided_windows_give_each_token_its_window_of_context(reference_lm):
    import torch

    stage = _stage(reference_lm, max_tokens=None, window=12, stride=1)
    text = " ".join(paragraphs(random.Random(4), "en", 2))
    ids = stage.tokenizer(text, add_special_tokens=False)["input_ids"][:60]
    expected = []
    for p in range(1, len(ids)):  # stride 1: token p sees the window - 1 tokens before it
        context = ids[max(0, p - 11):p + 1]
        with torch.no_grad():
            logits = stage.model(input_ids=torch.tensor([context])).logits[0, -2]
        expected.append(torch.nn.functional.cross_entropy(logits[None].float(), torch.tensor([ids[p]])).item())
    total, count = stage.token_nll([ids])[0]
    assert count == len(ids) - 1
    assert math.exp(total / count) == pytest.approx(math.exp(sum(expected) / len(expected)), rel=1e-4)


def test_batched_scores_equal_one_document_per_call(reference_lm):
    texts = paragraphs(random.Random(5), "fr", 6) + ["A short one."]
    single = _stage(reference_lm, batch_size=1, window=32)
    expected = [single.score([text])[0][0] for text in texts]
    # Rows per pass, a padded-token budget (a window longer than it runs alone), one
    # output-projection slice per few targets: the same numbers every way.
    for options in ({"batch_size": 16}, {"batch_size": 16, "batch_tokens": 64}, {"batch_size": 3, "batch_tokens": 20}):
        stage = _stage(reference_lm, window=32, **options)
        stage.head_rows = 7
        assert stage.score(texts)[0] == pytest.approx(expected, rel=1e-4), options


def test_batches_respect_rows_and_padded_tokens(reference_lm):
    stage = _stage(reference_lm, batch_size=4, batch_tokens=40)
    jobs = sorted([(i, [0] * n, 1) for i, n in enumerate([3, 5, 8, 8, 9, 12, 30, 50])], key=lambda j: len(j[1]))
    batches = stage._batches(jobs)
    assert [j for b in batches for j in b] == jobs
    assert all(len(b) <= 4 and (len(b) == 1 or len(b) * max(len(j[1]) for j in b) <= 40) for b in batches)
    assert [len(b) for b in batches] == [4, 2, 1, 1]


def test_head_tokenization_equals_the_whole_texts_first_tokens(reference_lm):
    rng = random.Random(8)
    texts = ["\n\n".join(paragraphs(rng, lang, 30)) for lang in ("en", "de", "zh", "ja", "es")]
    texts += ["word   " * 600, "1234567890" * 300, "日本語のテキスト。" * 300, " " * 3000 + "end", "x" * 5000,
              "caf\ufffd " * 700, "short text"]
    for cap in (16, 256):
        stage = _stage(reference_lm, max_tokens=cap)
        whole = stage.tokenizer(texts, add_special_tokens=False)["input_ids"]
        for text, (ids, more, _), full in zip(texts, stage._encode(texts), whole):
            assert ids == full[:cap] and more == (len(full) > cap), (cap, text[:30])
    # The head's unmappable share is what decides: U+FFFD all through the text is caught.
    stage = _stage(reference_lm, max_tokens=16)
    assert stage.score(["caf\ufffd " * 700])[2] == ["unmappable"]


def test_garbled_text_scores_worse_than_fluent_text(reference_lm):
    stage = _stage(reference_lm)
    rng = random.Random(11)  # held out: not the corpus seed
    for lang in ("en", "de", "zh"):
        fluent = paragraphs(rng, lang, 6)
        garbled = []
        for text in fluent:
            units = list(text) if lang == "zh" else text.split(" ")
            rng.shuffle(units)
            garbled.append(("" if lang == "zh" else " ").join(units))
        fluent_ppl, garbled_ppl = stage.score(fluent)[0], stage.score(garbled)[0]
        assert max(fluent_ppl) < min(garbled_ppl), (lang, fluent_ppl, garbled_ppl)


def test_bad_input_is_labelled_and_counted_by_rule(reference_lm):
    stage = _stage(reference_lm, max_tokens=16)
    long_text = " ".join(paragraphs(random.Random(6), "en", 3))
    table = stage(pa.table({"id": ["empty", "long", "broken", "ok"],
                            "text": ["", long_text, "\ufffd\ufffd\ufffd caf\ufffd \ufffd", "The city opened a new library."]}))
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows["empty"]["ppl"] is None and rows["empty"]["ppl_status"] == "empty"
    assert rows["long"]["ppl_status"] == "truncated" and rows["long"]["ppl_tokens"] == 15
    assert rows["broken"]["ppl"] is None and rows["broken"]["drop_reason"] == "ppl_unmappable"
    assert rows["broken"]["drop_stage"] == "perplexity"
    assert rows["ok"]["ppl_status"] == "scored" and rows["ok"]["drop_reason"] is None


def test_missing_model_file_fails_before_any_data(tmp_path):
    from curate.config import merge_config, parse_config
    from curate.pipeline import check_stages

    missing = tmp_path / "no-such-model"
    config = parse_config(merge_config({"perplexity": {"model_path": str(missing)}}))
    with pytest.raises(FileNotFoundError, match=f"perplexity.model_path: {missing} does not exist"):
        check_stages(config)
    with pytest.raises(ValueError, match="stride"):
        PerplexityConfig(window=8, stride=9)


def test_buckets_split_at_the_percentiles():
    rng = random.Random(0)
    en = [float(v) for v in rng.sample(range(1, 1001), 200)]
    zh = [float(v) for v in rng.sample(range(1, 1001), 100)]
    few = [5.0, 500.0, 900.0]  # too few for its own cutoffs: the pooled ones apply
    langs = ["en"] * len(en) + ["zh"] * len(zh) + ["sw"] * len(few)
    values = en + zh + few
    cutoffs = compute_cutoffs(langs, values, (30, 60), min_docs_per_lang=20)
    assert set(cutoffs) == {"en", "zh", "*"}
    table = assign_buckets(pa.table({"lang": langs + ["en"], "ppl": values + [None]}), cutoffs)
    buckets = table.column("ppl_bucket").to_pylist()
    for lang, n in (("en", 200), ("zh", 100)):
        mine = [b for l, b in zip(langs, buckets) if l == lang]
        assert (mine.count("head"), mine.count("middle"), mine.count("tail")) == (0.3 * n, 0.3 * n, 0.4 * n)
        head_max = max(v for l, v, b in zip(langs, values, buckets) if l == lang and b == "head")
        middle_min = min(v for l, v, b in zip(langs, values, buckets) if l == lang and b == "middle")
        assert head_max < middle_min  # the split is by value, not arbitrary
    low, high = cutoffs["*"]
    assert buckets[len(en) + len(zh):len(values)] == ["head" if 5.0 <= low else "middle",
                                                      "head" if 500 <= low else "middle" if 500 <= high else "tail",
                                                      "tail" if 900 > high else "middle"]
    assert buckets[-1] is None  # no ppl, no bucket
    supplied = assign_buckets(pa.table({"lang": ["en", "en", "en", "de"], "ppl": [10.0, 50.0, 99.0, 60.0]}),
                              {"en": [20.0, 60.0], "*": [100.0, 200.0]})
    assert supplied.column("ppl_bucket").to_pylist() == ["head", "middle", "tail", "head"]
    with pytest.raises(ValueError, match="percentiles"):
        BucketConfig(percentiles=(60, 30))
