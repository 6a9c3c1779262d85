"""Packing: best-fit decreasing, streaming bounds, collate, and per-token loss equal to unpacked runs."""
from __future__ import annotations

import random
import tracemalloc

import pytest
import torch

from train.collate import flatten_collate, padded_collate
from train.default_data import sft_default_sample
from train.packing import (BinPacker, BlockChunker, PackedExample, best_fit_decreasing, make_pack,
                           pack_examples, padding_efficiency)
from train.templates import get_template
from train.tokenize import IGNORE_INDEX, encode_sft


def _examples(n: int, seed: int = 0, low: int = 3, high: int = 120) -> list[PackedExample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randint(low, high)
        ids = [rng.randrange(1, 1000) for _ in range(k)]
        out.append(PackedExample(ids, [x if j % 3 else IGNORE_INDEX for j, x in enumerate(ids)]))
    return out


def test_best_fit_decreasing_packs_whole_items_within_capacity():
    lengths = [random.Random(1).randint(1, 100) for _ in range(500)]
    bins = best_fit_decreasing(lengths, 128)
    assert sorted(i for b in bins for i in b) == list(range(500))  # each item exactly once
    assert all(sum(lengths[i] for i in b) <= 128 for b in bins)
    lower_bound = -(-sum(lengths) // 128)
    assert len(bins) <= lower_bound * 1.05 + 1
    assert best_fit_decreasing(lengths, 128) == bins  # deterministic
    with pytest.raises(ValueError, match="longer than"):
        best_fit_decreasing([10, 200], 128)


def test_best_fit_is_tightest_fit():
    # 60 goes to the bin with 60 free, not the one with 70 free.
    assert best_fit_decreasing([70, 60, 60, 10], 130) == [[0, 1], [2, 3]]


def test_pack_rows_never_split_examples_and_restart_positions():
    examples = _examples(200)
    packs = pack_examples(examples, 256)
    total = 0
    for pack in packs:
        pos = pack["position_ids"]
        assert len(pack["input_ids"]) == len(pack["labels"]) == len(pos) <= 256
        starts = [i for i, p in enumerate(pos) if p == 0]
        bounds = starts + [len(pos)]
        for a, b in zip(bounds, bounds[1:]):
            assert pos[a:b] == list(range(b - a))
            assert pack["labels"][a] == IGNORE_INDEX  # no target crosses into the next example
            # Each segment is exactly one whole example.
            assert any(ex.input_ids == pack["input_ids"][a:b] for ex in examples)
        total += len(starts)
    assert total == len(examples)


def test_bin_packer_streams_in_bounded_memory():
    window = 200
    packer = BinPacker(capacity=256, window=window)
    seen_max = 0
    n_in, n_out_examples = 0, 0
    for ex in _examples(window * 10, seed=3):
        n_in += 1
        for pack in packer.add(ex):
            n_out_examples += pack["position_ids"].count(0)
        seen_max = max(seen_max, len(packer.buffer))
    for pack in packer.flush():
        n_out_examples += pack["position_ids"].count(0)
    assert n_out_examples == n_in
    assert seen_max <= 2 * window  # the buffer never holds more than two windows
    assert packer.efficiency > 0.95


def _peak_bytes(n: int) -> int:
    def stream():  # generated lazily: only the packer may hold examples
        rng = random.Random(5)
        for _ in range(n):
            ids = [rng.randrange(1, 1000) for _ in range(rng.randint(3, 120))]
            yield PackedExample(ids, list(ids))
    tracemalloc.start()
    packer = BinPacker(capacity=256, window=100)
    for _ in packer.feed(stream()):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_streaming_memory_is_flat_over_ten_times_the_window():
    small, large = _peak_bytes(500), _peak_bytes(5000)
    assert large < 1.5 * small, (small, large)


def test_block_chunker_concatenates_and_cuts():
    docs = [[1, 2, 3, 0], [4, 5, 0], [6, 7, 8, 9, 10, 0]]
    blocks = list(BlockChunker(4).feed(docs))
    assert [b["input_ids"] for b in blocks] == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 10], [0]]
    assert all(b["position_ids"] == list(range(len(b["input_ids"]))) for b in blocks)
    assert blocks[1]["labels"] == [IGNORE_INDEX, 5, 0, 6]
    assert len(list(BlockChunker(4, drop_remainder=True).feed(docs))) == 3


def test_flatten_collate_and_padded_collate_shapes():
    packs = pack_examples(_examples(30), 256)
    batch = flatten_collate(packs[:3])
    total = sum(len(p["input_ids"]) for p in packs[:3])
    assert set(batch) == {"input_ids", "labels", "position_ids"} and batch["input_ids"].shape == (1, total)
    assert (batch["labels"][batch["position_ids"] == 0] == IGNORE_INDEX).all()
    # Ray hands collate functions a dict of columns: same result.
    columns = {k: [p[k] for p in packs[:3]] for k in ("input_ids", "labels", "position_ids")}
    assert torch.equal(flatten_collate(columns)["input_ids"], batch["input_ids"])
    padded = padded_collate(packs[:3], pad_token_id=3)
    assert padded["attention_mask"].shape == padded["input_ids"].shape
    assert padding_efficiency([1, 3, 2, 2], 2) == pytest.approx(8 / 10)


def _per_token_losses(model, batch) -> torch.Tensor:
    kwargs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**kwargs, use_cache=False).logits.float()
    labels = batch["labels"]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                             ignore_index=IGNORE_INDEX, reduction="none")
    return loss.view(labels.shape[0], -1)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32)
    return tok, model.eval()


def _sft_examples(tok, n=12):
    template = get_template("chatml")
    return [encode_sft(r, tok, template, 128) for r in sft_default_sample(n, seed=7)]


@pytest.mark.parametrize("mode", ["flatten", "block_diagonal"])
def test_packed_loss_equals_unpacked_loss(tiny, mode):
    tok, model = tiny
    examples = _sft_examples(tok)
    packs = pack_examples(examples, 128)
    assert len(packs) < len(examples)
    with torch.no_grad():
        alone = []
        for ex in examples:
            batch = flatten_collate([make_pack([ex])])
            losses = _per_token_losses(model, batch)[0]
            alone.append(losses[batch["labels"][0, 1:] != IGNORE_INDEX])
        if mode == "flatten":
            batch = flatten_collate(packs)
            packed = _per_token_losses(model, batch)
            rows = [(batch, packed[0], batch["input_ids"].shape[1])]
        else:
            batch = padded_collate(packs, pad_token_id=tok.pad_token_id, block_diagonal=True)
            assert batch["attention_mask"].dim() == 4
            packed = _per_token_losses(model, batch)
            rows = [({k: v[i:i + 1] for k, v in batch.items()}, packed[i], len(packs[i]["input_ids"]))
                    for i in range(len(packs))]
    # Walk each packed row segment by segment and match each example's losses.
    got = []
    for row_batch, losses, valid in rows:
        pos = row_batch["position_ids"][0].tolist()
        labels = row_batch["labels"][0]
        starts = [i for i, p in enumerate(pos[:valid]) if p == 0] + [valid]
        for a, b in zip(starts, starts[1:]):
            seg_labels = labels[a + 1:b]
            got.append((row_batch["input_ids"][0, a:b].tolist(), losses[a:b - 1][seg_labels != IGNORE_INDEX]))
    assert len(got) == len(examples)
    for ex, ref in zip(examples, alone):
        match = [loss for ids, loss in got if ids == ex.input_ids]
        assert match and torch.allclose(match[0], ref, atol=1e-5), (match[0] - ref).abs().max()


def test_cross_example_attention_would_change_the_loss(tiny):
    """Sanity check that the equality above is meaningful: with one position run over the
    whole pack (no restart), the second example sees the first and its loss changes."""
    tok, model = tiny
    examples = _sft_examples(tok, 2)
    pack = make_pack(examples)
    batch = flatten_collate([pack])
    run_on = dict(batch, position_ids=torch.arange(batch["input_ids"].shape[1])[None])
    with torch.no_grad():
        isolated, leaked = _per_token_losses(model, batch), _per_token_losses(model, run_on)
    second = len(examples[0].input_ids)
    assert not torch.allclose(isolated[0, second:], leaked[0, second:], atol=1e-4)
