"""`gradient_checkpointing` for every finetuning type: the model recomputes its blocks in
backward (fewer activations kept), and the gradients are the ones without it."""
from __future__ import annotations

import pytest
import torch

from tests.unit.test_train_finetune import config, sft_rows
from train.collate import flatten_collate
from train.finetune import apply_finetuning
from train.model_loading import load_model


def saved_activation_bytes(model, batch) -> tuple[int, dict[str, torch.Tensor]]:
    """Bytes of the tensors autograd keeps for backward during one forward, and the grads.

    A saved-tensors hook sees every tensor the forward stores outside a checkpointed region;
    inside one, checkpointing's own hook stores nothing, which is the memory it saves.
    """
    total = 0
    seen: set[int] = set()

    def pack(t: torch.Tensor):
        nonlocal total
        # Weights saved for a matmul's backward are not activations: count each storage once.
        if isinstance(t, torch.nn.Parameter) or t.untyped_storage().data_ptr() in seen:
            return t
        seen.add(t.untyped_storage().data_ptr())
        total += t.untyped_storage().nbytes()
        return t

    model.train()
    model.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return total, grads


def test_option_parses_and_defaults_off(tiny_model_dir):
    assert config(tiny_model_dir).finetuning.gradient_checkpointing is False
    assert config(tiny_model_dir, gradient_checkpointing="true").finetuning.gradient_checkpointing is True


@pytest.mark.parametrize("kind", ["full", "freeze", "lora", "qlora"])
def test_checkpointing_keeps_fewer_activations_and_the_same_gradients(tiny_model_dir, kind):
    rows = sft_rows(tiny_model_dir, n=6)
    batch = flatten_collate(rows[:2])
    results = {}
    for on in (False, True):
        cfg = config(tiny_model_dir, finetuning_type=kind, lora_rank=4, gradient_checkpointing=on)
        torch.manual_seed(0)  # the same LoRA init in both runs
        model = load_model(cfg.model, cfg.finetuning)
        model.config.use_cache = False  # as the worker sets it: a cache turns packed-sequence masking off
        model = apply_finetuning(model, cfg.finetuning)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        assert base.is_gradient_checkpointing == on
        if kind in ("lora", "qlora"):
            with torch.no_grad():  # LoRA B starts at zero; give A's gradient something to flow through
                for name, p in model.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
        results[on] = saved_activation_bytes(model, batch)
    (plain_bytes, plain_grads), (ckpt_bytes, ckpt_grads) = results[False], results[True]
    assert ckpt_bytes < 0.7 * plain_bytes, (kind, plain_bytes, ckpt_bytes)
    assert plain_grads.keys() == ckpt_grads.keys() and plain_grads
    for name in plain_grads:
        torch.testing.assert_close(ckpt_grads[name], plain_grads[name], rtol=1e-4, atol=1e-6)
