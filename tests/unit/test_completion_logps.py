"""The completion head gives the same log-probs and gradients as the model's full logits,
per batch row or, given a sequence index, per sequence of a packed row."""
from __future__ import annotations

import pytest
import torch

from train.completion_logps import add_completion_head, completion_logps, labelled_token_logps, token_logps
from train.losses import sequence_logps


def _tiny_model(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def _batch(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, 97, (4, 20), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 15:] = 0  # right padding
    attention_mask[3, 9:] = 0
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :6] = -100  # the prompt
    labels[2, 6:11] = -100  # a longer prompt
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _reference(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return sequence_logps(logits, batch["labels"])


@pytest.mark.parametrize("chunk_tokens", [4096, 7])  # one chunk, and many (checkpointed) chunks
def test_values_and_gradients_match_full_logits(chunk_tokens):
    batch = _batch()
    plain, patched = _tiny_model(), _tiny_model()
    assert add_completion_head(patched, chunk_tokens=chunk_tokens)
    want_logps, want_counts = _reference(plain, batch)
    got = completion_logps(patched, batch)
    assert torch.equal(got.counts, want_counts)
    torch.testing.assert_close(got.logps, want_logps, atol=1e-5, rtol=1e-5)
    want_logps.sum().backward()
    got.logps.sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), patched.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)
    # The ordinary forward is unchanged (generation, SFT losses).
    out = patched(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert out.shape == (4, 20, 97)


def test_lora_model_and_disabled_adapter():
    from peft import LoraConfig, get_peft_model

    batch = _batch(3)
    base = _tiny_model(2)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "lm_head"],
                                            init_lora_weights=False))
    want = _reference(model, batch)[0]
    assert add_completion_head(model.get_base_model())
    torch.testing.assert_close(completion_logps(model, batch).logps, want, atol=1e-5, rtol=1e-5)
    with model.disable_adapter():
        off_want = _reference(model, batch)[0]
        off = completion_logps(model, batch).logps
    torch.testing.assert_close(off, off_want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(off, want)  # the adapter changes the log-probs: the test can tell


def test_soft_capped_models_keep_the_full_path():
    model = _tiny_model()
    model.config.final_logit_softcapping = 30.0
    assert not add_completion_head(model)
    batch = _batch()
    torch.testing.assert_close(completion_logps(model, batch).logps, _reference(model, batch)[0])


def test_rows_without_labels_sum_to_zero():
    hidden = torch.randn(2, 5, 8)
    labels = torch.full((2, 5), -100)
    labels[0, 3:] = torch.tensor([1, 2])
    out = labelled_token_logps(hidden, labels, torch.nn.Linear(8, 11, bias=False))
    assert out.counts.tolist() == [2, 0] and out.logps[1].item() == 0.0 and out.logps[0].item() < 0


def test_a_deep_copy_uses_its_own_weights():
    import copy

    batch = _batch()
    model = _tiny_model()
    add_completion_head(model)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.get_output_embeddings().weight.mul_(2.0)
    assert not torch.allclose(completion_logps(twin, batch).logps, completion_logps(model, batch).logps)
    torch.testing.assert_close(completion_logps(twin, batch).logps, _reference(twin, batch)[0], atol=1e-5, rtol=1e-5)


def test_token_logps_is_log_softmax_at_the_target():
    logits = torch.randn(2, 5, 11, dtype=torch.float64) * 4
    targets = torch.randint(0, 11, (2, 5))
    want = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]
    torch.testing.assert_close(token_logps(logits, targets), want.float())
    torch.testing.assert_close(token_logps(logits[0], targets[0]), want[0].float())  # [positions, vocab] too


@pytest.mark.parametrize("chunk_tokens", [4096, 3])  # 3: chunks cut across the packed sequences
def test_a_sequence_index_sums_a_packed_row_per_sequence(chunk_tokens):
    """Three sequences, each in its own row or end to end in one row: the same sums, counts and
    gradients (with hidden states that are the same per token, as a packed backbone gives)."""
    g = torch.Generator().manual_seed(5)
    head = torch.nn.Linear(8, 13, bias=False)
    lengths = [6, 4, 7]
    hiddens = [torch.randn(n, 8, generator=g) for n in lengths]
    labels = [torch.randint(0, 13, (n,), generator=g) for n in lengths]
    for label in labels:
        label[:2] = -100  # a prompt, and the sequence's first token that nothing predicts
    labels[1][3] = -100

    rows = torch.zeros(3, max(lengths), 8)
    row_labels = torch.full((3, max(lengths)), -100)
    for i, (h, label) in enumerate(zip(hiddens, labels)):
        rows[i, :len(h)], row_labels[i, :len(label)] = h, label
    rows.requires_grad_(True)
    want = labelled_token_logps(rows, row_labels, head, chunk_tokens)
    (want.logps * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    want_head_grad, head.weight.grad = head.weight.grad.clone(), None

    packed = torch.cat(hiddens)[None].requires_grad_(True)
    index = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths))[None]
    got = labelled_token_logps(packed, torch.cat(labels)[None], head, chunk_tokens, sequence_index=index)
    (got.logps * torch.tensor([1.0, 2.0, 3.0])).sum().backward()

    assert got.counts.tolist() == want.counts.tolist() == [4, 1, 5]
    torch.testing.assert_close(got.logps, want.logps)
    torch.testing.assert_close(head.weight.grad, want_head_grad)
    torch.testing.assert_close(packed.grad[0], torch.cat([rows.grad[i, :n] for i, n in enumerate(lengths)]))


def _labelled_rows(seed: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Linear]:
    """Hidden states [3, 9, 8], labels with 14 labelled targets, and an LM head over 13 tokens."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    hidden = torch.randn(3, 9, 8, generator=g)
    labels = torch.randint(0, 13, (3, 9), generator=g)
    labels[:, :4] = -100  # 3 rows x 5 targets ...
    labels[1, 7] = -100  # ... less one
    return hidden, labels, torch.nn.Linear(8, 13, bias=False)


def test_one_chunk_and_many_chunks_give_the_same_logps_and_gradients():
    hidden, labels, head = _labelled_rows()
    results = {}
    for chunk_tokens in (4096, 4):  # one chunk (not checkpointed); four checkpointed chunks
        h = hidden.clone().requires_grad_(True)
        head.weight.grad = None
        out = labelled_token_logps(h, labels, head, chunk_tokens)
        (out.logps * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
        results[chunk_tokens] = (out.logps.detach(), out.counts, h.grad, head.weight.grad.clone())
    (one_logps, one_counts, one_hidden_grad, one_head_grad), many = results[4096], results[4]
    assert one_counts.tolist() == many[1].tolist() == [5, 4, 5]
    torch.testing.assert_close(one_logps, many[0])
    torch.testing.assert_close(one_hidden_grad, many[2])
    torch.testing.assert_close(one_head_grad, many[3])
    assert one_hidden_grad.abs().sum() > 0 and one_head_grad.abs().sum() > 0


@pytest.mark.parametrize(("chunk_tokens", "grad", "rows_per_head_call"), [
    (4096, True, [14]),  # one chunk: projected once, its logits kept for backward
    (14, True, [14]),  # exactly one full chunk
    (4, True, [2, 2, 4, 4, 4, 4, 4, 4]),  # four chunks, each projected again in backward (checkpoint)
    (4, False, [2, 4, 4, 4]),  # no autograd: nothing to recompute
])
def test_only_several_chunks_recompute_the_head(chunk_tokens, grad, rows_per_head_call):
    hidden, labels, head = _labelled_rows()
    calls = []
    head.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    with torch.set_grad_enabled(grad):
        out = labelled_token_logps(hidden.requires_grad_(grad), labels, head, chunk_tokens)
        if grad:
            out.logps.sum().backward()
    assert sorted(calls) == rows_per_head_call
