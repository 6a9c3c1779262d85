"""DPO trainer references: LoRA's disabled adapter (no second copy) equals a frozen copy;
precomputed reference log-probs equal the copy's; options are checked."""
from __future__ import annotations

import pytest
import torch

from train.args import TrainConfigError, parse_train_config
from train.preference_data import PreferenceCollator, collate_pairs, tokenize_preferences, toy_preference_table
from train.stages.preference_stage import PreferenceOptions


def _cfg(tiny_model_dir, tmp_path, finetuning_type, **options):
    return parse_train_config({"model": str(tiny_model_dir), "stage": "dpo", "finetuning_type": finetuning_type,
                               "output": str(tmp_path), "per_device_batch_size": 4, "lora_rank": 4,
                               "data_options": {"beta": 0.2, "sft_weight": 0.1, **options}})


def _trainer(cfg, model, tokenizer, examples, tmp_path):
    from train.stages.dpo import dpo_trainer_class
    from train.worker import StreamBatches, training_arguments

    cls = dpo_trainer_class(cfg, PreferenceOptions.from_config(cfg), [])
    stream = StreamBatches(lambda: iter(examples), 4, PreferenceCollator(tokenizer.pad_token_id))
    return cls(model=model, args=training_arguments(cfg, str(tmp_path / "hf"), 1), train_dataset=stream,
               processing_class=tokenizer)


@pytest.fixture(scope="module")
def pairs(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return tokenizer, tokenize_preferences(toy_preference_table(8, seed=5), tokenizer, cutoff_len=96).examples


def _distinct_parameters(*models) -> int:
    seen, total = set(), 0
    for model in models:
        if model is None:
            continue
        for p in model.parameters():
            if p.data_ptr() not in seen:
                seen.add(p.data_ptr())
                total += p.numel()
    return total


def test_lora_reference_is_the_disabled_adapter_and_matches_a_frozen_copy(tiny_model_dir, tmp_path, pairs):
    from train.finetune import apply_finetuning
    from train.model_loading import load_model

    tokenizer, examples = pairs
    cfg_adapter = _cfg(tiny_model_dir, tmp_path, "lora")  # reference auto -> adapter
    cfg_copy = _cfg(tiny_model_dir, tmp_path, "lora", reference="copy")
    base_params = sum(p.numel() for p in load_model(cfg_adapter.model, cfg_adapter.finetuning).parameters())

    model = apply_finetuning(load_model(cfg_adapter.model, cfg_adapter.finetuning), cfg_adapter.finetuning)
    torch.manual_seed(0)
    with torch.no_grad():  # LoRA B starts at zero; move it so the policy differs from the reference
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)

    adapter = _trainer(cfg_adapter, model, tokenizer, examples, tmp_path)
    copy = _trainer(cfg_copy, model, tokenizer, examples, tmp_path)
    assert adapter.reference == "adapter" and adapter.ref_model is None
    assert copy.reference == "copy" and copy.ref_model is not None

    # No second copy: everything the adapter trainer holds is the base plus small adapters.
    held_by_adapter = _distinct_parameters(adapter.model, adapter.ref_model)
    held_by_copy = _distinct_parameters(copy.model, copy.ref_model)
    assert held_by_adapter < 1.2 * base_params
    assert held_by_copy >= 2 * base_params

    batch = collate_pairs(examples[:4], tokenizer.pad_token_id)
    results = []
    for trainer in (adapter, copy):
        model.zero_grad()
        out = trainer.dpo_outputs(model, batch)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((out, grads))
    (a, grads_a), (c, grads_c) = results
    assert a.chosen_rewards.abs().sum() > 0  # the policy really differs from the reference
    torch.testing.assert_close(a.loss, c.loss)
    torch.testing.assert_close(a.chosen_rewards, c.chosen_rewards)
    torch.testing.assert_close(a.rejected_rewards, c.rejected_rewards)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_c[name])
    # The adapter is back on after the reference pass.
    assert not model.base_model.model.model.layers[0].self_attn.q_proj.disable_adapters


def test_precomputed_reference_equals_the_copy(tiny_model_dir, tmp_path, pairs):
    from train.finetune import apply_finetuning
    from train.model_loading import load_model

    tokenizer, examples = pairs
    cfg_pre = _cfg(tiny_model_dir, tmp_path, "full", reference="precompute")
    cfg_copy = _cfg(tiny_model_dir, tmp_path, "full")  # auto -> copy
    model = apply_finetuning(load_model(cfg_pre.model, cfg_pre.finetuning), cfg_pre.finetuning)
    pre = _trainer(cfg_pre, model, tokenizer, examples, tmp_path)
    assert pre.ref_model is None
    pre.precompute_reference()
    assert set(pre.ref_logps) == {e["id"] for e in examples}

    copy = _trainer(cfg_copy, model, tokenizer, examples, tmp_path)
    batch = collate_pairs(examples[4:], tokenizer.pad_token_id)
    torch.testing.assert_close(pre.reference_logps(model, batch), copy.reference_logps(model, batch))


def test_preference_options_are_checked(tiny_model_dir, tmp_path):
    with pytest.raises(TrainConfigError, match="unknown data_options"):
        PreferenceOptions.from_config(_cfg(tiny_model_dir, tmp_path, "full", betta=0.1))
    with pytest.raises(TrainConfigError, match="loss_type"):
        PreferenceOptions.from_config(_cfg(tiny_model_dir, tmp_path, "full", loss_type="kto"))
    with pytest.raises(TrainConfigError, match="adapter"):
        PreferenceOptions.from_config(_cfg(tiny_model_dir, tmp_path, "full", reference="adapter"))
    options = PreferenceOptions.from_config(_cfg(tiny_model_dir, tmp_path, "qlora", loss_type="ipo"))
    assert options.reference_mode("qlora") == "adapter" and options.loss_type == "ipo" and options.beta == 0.2
    with pytest.raises(TrainConfigError, match=r"data_options.shuffle must be a bool, got 'maybe'"):
        PreferenceOptions.from_config(_cfg(tiny_model_dir, tmp_path, "full", shuffle="maybe"))
    assert PreferenceOptions.from_config(_cfg(tiny_model_dir, tmp_path, "full", shuffle="false")).shuffle is False


@pytest.mark.parametrize("options, finetuning_type", [
    (dict(loss_type="orpo", sft_weight=0.0), "full"),
    (dict(loss_type="simpo", simpo_gamma=0.3, label_smoothing=0.1), "lora"),
    (dict(loss_type="sigmoid", reference_free=True, label_smoothing=0.2), "full"),
])
def test_reference_free_losses_load_no_reference_and_train_on_the_policy_alone(tiny_model_dir, tmp_path, pairs,
                                                                                options, finetuning_type):
    from train.finetune import apply_finetuning
    from train.losses import dpo_loss, sequence_logps
    from train.model_loading import load_model

    tokenizer, examples = pairs
    cfg = _cfg(tiny_model_dir, tmp_path, finetuning_type, **options)
    model = apply_finetuning(load_model(cfg.model, cfg.finetuning), cfg.finetuning)
    trainer = _trainer(cfg, model, tokenizer, examples, tmp_path)
    # No copy for full finetuning, no adapter switching for LoRA: the loss never asks for one.
    assert trainer.reference == "none" and trainer.ref_model is None

    batch = collate_pairs(examples[:4], tokenizer.pad_token_id)
    out = trainer.dpo_outputs(model, batch)
    logps, counts = sequence_logps(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                   batch["labels"])
    o = PreferenceOptions.from_config(cfg)
    expected = dpo_loss(*logps.chunk(2), None, None, beta=o.beta, loss_type=o.loss_type, sft_weight=o.sft_weight,
                        chosen_lengths=counts.chunk(2)[0], rejected_lengths=counts.chunk(2)[1],
                        label_smoothing=o.label_smoothing, reference_free=o.reference_free, simpo_gamma=o.simpo_gamma)
    torch.testing.assert_close(out.loss, expected.loss)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)


def test_dpo_family_options_are_checked_before_training(tiny_model_dir, tmp_path):
    with pytest.raises(TrainConfigError, match="label_smoothing"):
        PreferenceOptions.from_config(_cfg(tiny_model_dir, tmp_path, "full", loss_type="hinge", label_smoothing=0.1))
    with pytest.raises(TrainConfigError, match="label_smoothing"):
        PreferenceOptions.from_config(_cfg(tiny_model_dir, tmp_path, "full", label_smoothing=0.5))
    with pytest.raises(TrainConfigError, match="reference"):
        PreferenceOptions.from_config(_cfg(tiny_model_dir, tmp_path, "full", loss_type="orpo", sft_weight=0.0,
                                           reference="copy"))
    with pytest.raises(TrainConfigError, match="sft_weight"):
        PreferenceOptions.from_config(_cfg(tiny_model_dir, tmp_path, "full", loss_type="orpo"))  # _cfg sets 0.1
    options = PreferenceOptions.from_config(_cfg(tiny_model_dir, tmp_path, "lora", reference_free="true"))
    assert options.reference_free is True and options.reference_mode("lora") == "none"
    assert PreferenceOptions.from_config(_cfg(tiny_model_dir, tmp_path, "full")).reference_mode("full") == "copy"
