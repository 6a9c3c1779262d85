"""SDPA per packed example (train.segment_attention) computes what the block-diagonal
mask computes: same logits and gradients on packed rows, and the plain SDPA path for
padded batches and generation."""
from __future__ import annotations

import torch

from train.segment_attention import example_bounds, register


def _pair(seed: int = 0):
    """The same tiny GQA Llama twice: plain SDPA and SDPA per example."""
    from transformers import LlamaConfig, LlamaForCausalLM

    register()
    config = LlamaConfig(vocab_size=101, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(seed)
    plain = LlamaForCausalLM(config)
    plain.config._attn_implementation = "sdpa"
    segments = LlamaForCausalLM(config)
    segments.load_state_dict(plain.state_dict())
    segments.config._attn_implementation = "sdpa_segments"
    return plain, segments


def _packed(lengths: list[int], seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 101, (1, sum(lengths)), generator=g)
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    return {"input_ids": ids, "position_ids": position_ids, "labels": ids.clone()}


def test_bounds():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    assert example_bounds(pos, 9, 9) == [[(0, 3), (3, 5), (5, 9)]]
    assert example_bounds(torch.arange(9)[None], 9, 9) is None  # one example: plain SDPA
    assert example_bounds(pos, 1, 9) is None  # decoding with a cache
    # Left padding at position 0 (the RL rollouts' layout) and one-token examples: the mask decides.
    assert example_bounds(torch.tensor([[0, 0, 0, 0, 1, 2]]), 6, 6) is None
    assert example_bounds(torch.tensor([[0, 1, 0, 0, 1]]), 5, 5) is None


def test_packed_rows_match_the_block_diagonal_mask(monkeypatch):
    import train.segment_attention as module

    calls = []
    sdpa = module.F.scaled_dot_product_attention
    monkeypatch.setattr(module.F, "scaled_dot_product_attention",
                        lambda q, *a, **k: calls.append(q.shape[2]) or sdpa(q, *a, **k))
    plain, segments = _pair()
    batch = _packed([17, 5, 30, 2, 11])
    want = plain(**batch, use_cache=False)
    calls.clear()
    got = segments(**batch, use_cache=False)
    assert calls == [17, 5, 30, 2, 11] * 2  # one causal SDPA per example, per layer
    torch.testing.assert_close(got.logits, want.logits, atol=2e-5, rtol=1e-4)
    want.loss.backward()
    got.loss.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), segments.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=2e-5, rtol=1e-3, msg=name)
    # The split matters: attending across the example boundary would change the logits.
    whole = plain(input_ids=batch["input_ids"], use_cache=False).logits
    assert not torch.allclose(whole, want.logits, atol=1e-3)


def test_one_token_examples_fall_back_to_the_mask():
    plain, segments = _pair(5)
    batch = _packed([9, 1, 6])
    torch.testing.assert_close(segments(**batch, use_cache=False).logits, plain(**batch, use_cache=False).logits,
                               atol=2e-5, rtol=1e-4)


def test_padded_batches_and_generation_take_plain_sdpa():
    plain, segments = _pair(3)
    ids = torch.randint(3, 101, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    torch.testing.assert_close(segments(input_ids=ids, attention_mask=mask).logits,
                               plain(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=1e-4)
    left = torch.ones_like(ids)
    left[0, :4] = 0  # left padding, as generate sees it: position_ids restart inside the row
    out_plain = plain.generate(input_ids=ids, attention_mask=left, max_new_tokens=6, do_sample=False, pad_token_id=0)
    out_segments = segments.generate(input_ids=ids, attention_mask=left, max_new_tokens=6, do_sample=False,
                                     pad_token_id=0)
    assert torch.equal(out_segments, out_plain)


def test_loading_picks_it_on_cpu(tiny_model_dir):
    from train.args import FinetuningArguments, ModelArguments
    from train.model_loading import load_model

    model = load_model(ModelArguments(model=str(tiny_model_dir)), FinetuningArguments(finetuning_type="full"))
    assert model.config._attn_implementation == "sdpa_segments"
