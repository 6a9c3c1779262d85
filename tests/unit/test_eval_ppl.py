"""Perplexity with strided windows: every token scored once, and the batched, padded scorer
equals a direct computation with transformers' own loss."""
from __future__ import annotations

import math

import pytest
import torch

from train.evaluation.ppl import (PerplexityOptions, document_ids, score_documents, strided_windows, summarize,
                                  window_nlls)

TEXTS = [
    "The garden grows well today. " * 9,
    "A student explains the question with care.",
    "今天天气很好。我们训练一个小模型。",
    "Our team builds a simple plan before noon, again and again. " * 4,
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("n,max_length,stride", [(2, 4, 1), (10, 4, 1), (37, 8, 3), (37, 8, 7), (100, 16, 5), (5, 16, 4)])
def test_windows_score_every_token_once_with_enough_context(n, max_length, stride):
    windows = strided_windows(n, max_length, stride)
    targets = [t for w in windows for t in range(w.first_target, w.end)]
    assert targets == list(range(1, n))
    for i, w in enumerate(windows):
        assert 0 <= w.begin < w.first_target < w.end
        assert w.end - w.begin <= max_length
        if i:  # after the first window every target sees at least max_length - stride tokens
            assert w.first_target - w.begin >= min(max_length - stride, w.first_target)


@torch.no_grad()
def _hf_window_nll(model, ids: list[int], begin: int, end: int, first_target: int) -> float:
    """One window on its own, no padding, scored by transformers' shifted cross entropy."""
    window = torch.tensor([ids[begin:end]])
    labels = window.clone()
    labels[0, : first_target - begin] = -100
    out = model(input_ids=window, labels=labels)
    return float(out.loss) * (end - first_target)


def test_single_window_equals_transformers_loss(tiny):
    model, tokenizer = tiny
    text = TEXTS[0]
    ids, n_bytes = document_ids(tokenizer, text)
    assert ids[0] == tokenizer.eos_token_id  # the tiny tokenizer has no BOS: EOS is the prefix
    assert n_bytes == len(text.encode("utf-8"))
    [row] = score_documents(model, tokenizer, [text], max_length=len(ids), stride=1)
    with torch.no_grad():
        direct = float(model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss) * (len(ids) - 1)
    assert row["tokens"] == len(ids) - 1 and row["windows"] == 1
    assert row["nll"] == pytest.approx(direct, rel=1e-4)


@pytest.mark.parametrize("max_length,stride,per_forward", [(16, 5, 8), (16, 15, 3), (12, 1, 64)])
def test_batched_strided_scoring_equals_direct_computation(tiny, max_length, stride, per_forward):
    model, tokenizer = tiny
    rows = score_documents(model, tokenizer, TEXTS + [""], max_length, stride, windows_per_forward=per_forward)
    for text, row in zip(TEXTS, rows):
        ids, _ = document_ids(tokenizer, text)
        direct = sum(_hf_window_nll(model, ids, w.begin, w.end, w.first_target)
                     for w in strided_windows(len(ids), max_length, stride))
        assert row["nll"] == pytest.approx(direct, rel=1e-4, abs=1e-4)
        assert row["tokens"] == len(ids) - 1
    assert rows[-1] == {"tokens": 0, "bytes": 0, "nll": 0.0, "windows": 0}

    metrics = summarize(rows)
    total_nll, tokens = sum(r["nll"] for r in rows), sum(r["tokens"] for r in rows)
    total_bytes = sum(len(t.encode("utf-8")) for t in TEXTS)
    assert metrics["perplexity"] == pytest.approx(math.exp(total_nll / tokens), rel=1e-9)
    assert metrics["bits_per_byte"] == pytest.approx(total_nll / math.log(2) / total_bytes, rel=1e-9)
    assert metrics["documents"] == len(TEXTS) + 1 and metrics["empty_documents"] == 1


def test_stacked_padded_windows_equal_windows_alone(tiny):
    model, tokenizer = tiny
    ids, _ = document_ids(tokenizer, TEXTS[3])
    windows = strided_windows(len(ids), 16, 4)
    alone = [window_nlls(model, [ids], [w], 0, 1)[0] for w in windows]
    stacked = window_nlls(model, [ids] * len(windows), windows, tokenizer.pad_token_id, len(windows))
    assert stacked == pytest.approx(alone, rel=1e-4, abs=1e-4)


def test_bad_options_name_the_option():
    with pytest.raises(ValueError, match="stride"):
        PerplexityOptions(data=["x"], max_length=8, stride=8)
    with pytest.raises(ValueError, match="dtype"):
        PerplexityOptions(data=["x"], dtype="int3")
