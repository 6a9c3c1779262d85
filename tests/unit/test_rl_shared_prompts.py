"""Running each distinct prompt once (train.rl.shared_prompts) gives the one-pass forward's
log-probs, entropies, hidden states and gradients (within 1e-5), on rows that share prompts
with left padding and early EOS, in any row order, for a full model and under LoRA (adapter
on and off); generation from the prefilled prompt cache samples the same tokens; batches or
models where it does not apply take the one-pass forward."""
from __future__ import annotations

import pytest
import torch

from train.rl.rollout import RolloutBatch, left_pad, response_outputs
from train.rl.shared_prompts import (
    distinct_prompts,
    plain_cache,
    prefilled_cache,
    shared_prompt_forward,
)

G, WIDTH = 3, 7


def _grouped_batch() -> RolloutBatch:
    """3 prompts of different lengths x G responses; some responses end early (mask 0 after EOS)."""
    gen = torch.Generator().manual_seed(5)
    prompts = [torch.randint(10, 500, (n,), generator=gen).tolist() for n in (6, 3, 9)]
    prompt_ids, prompt_mask = left_pad([p for p in prompts for _ in range(G)], pad_id=3)
    n = prompt_ids.size(0)
    response_ids = torch.randint(10, 500, (n, WIDTH), generator=gen)
    lengths = torch.tensor([7, 2, 5, 1, 7, 4, 3, 7, 6])
    response_mask = (torch.arange(WIDTH)[None] < lengths[:, None]).long()
    return RolloutBatch(prompt_ids, prompt_mask, response_ids.masked_fill(response_mask == 0, 3), response_mask,
                        prompt_index=[i for i in range(3) for _ in range(G)])


def _model(tiny_model_dir, lora: bool = False):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM"))
        with torch.no_grad():  # non-zero adapters, so "adapter on" differs from "adapter off"
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.2)
    return model.train()


def _assert_same(model, batch: RolloutBatch, temperature: float = 0.7) -> None:
    mask = batch.response_mask.bool()
    params = [p for p in model.parameters() if p.requires_grad]
    outs, grads = [], []
    for share in (False, True):
        out = response_outputs(model, batch, temperature, with_entropy=True, with_hidden=True, share_prompts=share)
        loss = (out.logps * mask).sum() + 0.1 * (out.entropy * mask).sum() + (out.hidden * mask[..., None]).mean()
        grads.append(torch.autograd.grad(loss, params))
        outs.append(out)
    full, shared = outs
    for name in ("logps", "entropy"):
        torch.testing.assert_close(getattr(shared, name)[mask], getattr(full, name)[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared.hidden[mask], full.hidden[mask], atol=1e-5, rtol=1e-5)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_shared_prompt_forward_applies_to_grouped_rows(tiny_model_dir):
    model = _model(tiny_model_dir)
    batch = _grouped_batch()
    first, inverse = distinct_prompts(batch.prompt_ids, batch.prompt_mask)
    assert len(first) == 3 and torch.equal(batch.prompt_ids[first][inverse], batch.prompt_ids)
    assert shared_prompt_forward(model, batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                                 batch.response_mask) is not None


def test_shared_prompts_equal_the_one_pass_forward(tiny_model_dir):
    _assert_same(_model(tiny_model_dir), _grouped_batch())


def test_shared_prompts_equal_the_one_pass_forward_in_shuffled_order(tiny_model_dir):
    batch = _grouped_batch()
    _assert_same(_model(tiny_model_dir), batch.select(torch.randperm(len(batch), generator=torch.Generator().manual_seed(1))))


def test_shared_prompts_under_lora_with_the_adapter_on_and_off(tiny_model_dir):
    model = _model(tiny_model_dir, lora=True)
    batch = _grouped_batch()
    _assert_same(model, batch)
    with torch.no_grad(), model.disable_adapter():
        off = response_outputs(model, batch, share_prompts=True).logps
        off_full = response_outputs(model, batch, share_prompts=False).logps
    with torch.no_grad():
        on = response_outputs(model, batch).logps
    mask = batch.response_mask.bool()
    torch.testing.assert_close(off[mask], off_full[mask], atol=1e-5, rtol=1e-5)
    assert (on[mask] - off[mask]).abs().max() > 1e-3  # the adapter really was off


def test_distinct_prompts_none_when_no_row_shares_its_prompt():
    ids, mask = left_pad([[11, 12], [11, 12, 13], [12, 11]], pad_id=3)
    assert distinct_prompts(ids, mask) is None
    # same tokens, different padding: different prompts
    ids = torch.tensor([[3, 11], [3, 11]])
    assert distinct_prompts(ids, torch.tensor([[0, 1], [1, 1]])) is None
    assert distinct_prompts(ids, torch.tensor([[0, 1], [0, 1]])) is not None


def test_one_pass_forward_for_gradient_checkpointing_and_sliding_windows(tiny_model_dir):
    from transformers import MistralConfig, MistralForCausalLM

    model = _model(tiny_model_dir)
    assert plain_cache(model) is not None
    model.activation_checkpointing_enable()
    assert plain_cache(model) is None
    batch = _grouped_batch()
    assert shared_prompt_forward(model, batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                                 batch.response_mask) is None
    sliding = MistralForCausalLM(MistralConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, num_key_value_heads=1, sliding_window=4))
    assert plain_cache(sliding) is None


@pytest.mark.parametrize("width", [1])
def test_one_token_responses_take_the_one_pass_forward(tiny_model_dir, width):
    batch = _grouped_batch()
    short = RolloutBatch(batch.prompt_ids, batch.prompt_mask, batch.response_ids[:, :width],
                         batch.response_mask[:, :width], prompt_index=batch.prompt_index)
    model = _model(tiny_model_dir)
    assert shared_prompt_forward(model, short.prompt_ids, short.prompt_mask, short.response_ids,
                                 short.response_mask) is None
    assert response_outputs(model, short).logps.shape == (len(short), width)


@pytest.mark.parametrize("lora", [False, True])
def test_generation_from_the_prefilled_prompt_cache_samples_the_same_tokens(tiny_model_dir, lora):
    from train.rl.rollout import SamplingSettings, sample_responses

    model = _model(tiny_model_dir, lora=lora)
    prompts = [[11, 12, 13, 14, 15], [20], [30, 31, 32]]  # one-token prompt: its cached part is all padding
    settings = SamplingSettings(max_new_tokens=6, temperature=0.9)
    batches = [sample_responses(model, prompts, 3, settings, eos_ids=[0], pad_id=3, generator_seed=7, share_prompts=s)
               for s in (False, True)]
    assert torch.equal(batches[0].response_ids, batches[1].response_ids)
    with torch.no_grad():  # the shared path was the one taken
        assert prefilled_cache(model, batches[1].prompt_ids, batches[1].prompt_mask) is not None
    assert torch.equal(batches[0].response_mask, batches[1].response_mask)
    assert model.training  # generate ran in eval mode; the train mode is back
