"""Padding-free DPO batches (train.packed_pairs): the packed row holds exactly the padded
batch's tokens, and its per-sequence log-probs, DPO loss and gradients equal the padded
batch's under the completion head, on SDPA per segment and on plain SDPA, with LM-head
chunks that cross the packed sequences' boundaries, on a vocabulary too large for the
unchunked logits, and on the full-logits path of a model without the head."""
from __future__ import annotations

import pytest
import torch

from train.args import TrainConfigError, parse_train_config
from train.packed_pairs import IGNORE_INDEX, pack_pairs, packed_logps
from train.preference_data import (
    collate_pairs,
    tokenize_preferences,
    toy_preference_table,
)
from train.stages.preference_stage import PreferenceOptions


def _cfg(tiny_model_dir, tmp_path, **options):
    return parse_train_config({"model": str(tiny_model_dir), "stage": "dpo", "output": str(tmp_path),
                               "per_device_batch_size": 4, "cutoff_len": 96, "data_options": options})


@pytest.fixture(scope="module")
def pairs(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = tokenize_preferences(toy_preference_table(8, seed=3), tokenizer, cutoff_len=96).examples
    return tokenizer, examples[:4]


def test_pack_pairs_lays_out_chosen_then_rejected_without_padding():
    examples = [{"id": "a", "prompt_ids": [5, 6], "chosen_ids": [7, 8, 9], "rejected_ids": [10]},
                {"id": "b", "prompt_ids": [11], "chosen_ids": [12], "rejected_ids": [13, 14]}]
    batch = pack_pairs(examples)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 11, 12, 5, 6, 10, 11, 13, 14]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 0, 1, 2, 0, 1, 2]]
    x = IGNORE_INDEX
    assert batch["labels"].tolist() == [[x, x, 7, 8, 9, x, 12, x, x, 10, x, 13, 14]]
    assert batch["sequence_lengths"].tolist() == [5, 2, 3, 3]
    assert batch["ids"] == ["a", "b"] and "attention_mask" not in batch


def test_a_sequence_start_is_never_a_target_even_without_a_prompt():
    batch = pack_pairs([{"prompt_ids": [], "chosen_ids": [4, 5], "rejected_ids": [6, 7]}])
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 5, IGNORE_INDEX, 7]]


def _model(tiny_model_dir, attn: str, chunk_tokens: int = 4096, vocab_size: int | None = None,
           with_head: bool = True):
    from train.completion_logps import add_completion_head
    from train.model_loading import load_model

    cfg = parse_train_config({"model": str(tiny_model_dir), "stage": "dpo", "attn_implementation": attn})
    torch.manual_seed(0)
    if vocab_size is None:
        model = load_model(cfg.model, cfg.finetuning)
    else:  # the tiny model's shape with a larger vocabulary (the tiny tokenizer's ids stay valid)
        from transformers import AutoConfig, AutoModelForCausalLM

        from train.model_loading import pick_attn_implementation

        config = AutoConfig.from_pretrained(tiny_model_dir, vocab_size=vocab_size)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=pick_attn_implementation(attn, False))
    model.config.use_cache = False
    if not with_head:  # a logit transform after the head (Llama's forward ignores it): the full-logits path
        model.config.final_logit_softcapping = 30.0
    assert add_completion_head(model, chunk_tokens=chunk_tokens) is with_head
    return model


def _head_rows(model) -> list[int]:
    """Records the number of positions of every LM-head call (forward and checkpoint recompute)."""
    rows: list[int] = []
    model.get_output_embeddings().register_forward_hook(lambda _m, _i, out: rows.append(out.shape[-2]))
    return rows


def _assert_packed_equals_padded(model, examples, pad_token_id):
    from train.completion_logps import completion_logps

    padded = collate_pairs(examples, pad_token_id)
    assert padded["attention_mask"].float().mean() < 1  # the batch really has padding to skip

    want = completion_logps(model, padded)
    weights = torch.linspace(0.5, 1.5, len(want.logps))  # a non-uniform loss, so every sequence's gradient counts
    (want.logps * weights).sum().backward()
    want_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    got, counts = packed_logps(model, pack_pairs(examples))
    (got * weights).sum().backward()
    torch.testing.assert_close(got, want.logps, atol=1e-4, rtol=1e-5)
    assert counts.tolist() == want.counts.tolist()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, want_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    return counts


# chunk_tokens 5: every chunk of labelled positions after the first few crosses into the next sequence.
@pytest.mark.parametrize("attn,chunk_tokens", [("sdpa_segments", 4096), ("sdpa", 4096), ("sdpa_segments", 5)])
def test_packed_logps_and_gradients_equal_the_padded_batch(tiny_model_dir, pairs, attn, chunk_tokens):
    tokenizer, examples = pairs
    model = _model(tiny_model_dir, attn, chunk_tokens)
    rows = _head_rows(model)
    counts = _assert_packed_equals_padded(model, examples, tokenizer.pad_token_id)
    if chunk_tokens < 4096:
        assert min(counts.tolist()) > chunk_tokens  # so chunks do straddle the sequence boundaries
    # Padded and packed both project the labelled positions only, a chunk at a time: never the
    # whole row. Several chunks are each projected twice (forward, then the checkpoint's
    # recompute in backward); a lone chunk once (it is not checkpointed).
    projections = 2 if chunk_tokens < int(counts.sum()) else 1
    assert max(rows) <= chunk_tokens and sum(rows) == 2 * projections * int(counts.sum())


def test_a_vocabulary_the_unchunked_logits_could_not_hold(tiny_model_dir, pairs):
    """400k vocabulary: a batch of 4 pairs at cutoff 96 could carry 2*4*96 labelled rows of fp32
    logits, 1.2 GB at once, which kept such models on the padded path. Packed, the head still
    projects 16 rows at a time and the result is the padded batch's."""
    tokenizer, examples = pairs
    vocab_size, chunk_tokens = 400_000, 16
    model = _model(tiny_model_dir, "sdpa_segments", chunk_tokens, vocab_size=vocab_size)
    rows = _head_rows(model)
    _assert_packed_equals_padded(model, examples, tokenizer.pad_token_id)
    assert max(rows) == chunk_tokens  # largest logits alive: 16 x 400k fp32 = 25.6 MB


def test_a_model_without_the_head_packs_from_its_own_logits(tiny_model_dir, pairs):
    tokenizer, examples = pairs
    model = _model(tiny_model_dir, "sdpa_segments", with_head=False)
    rows = _head_rows(model)
    counts = _assert_packed_equals_padded(model, examples, tokenizer.pad_token_id)
    packed_rows = rows[-1]  # the packed forward's one head call: the labelled positions' logits only
    assert packed_rows == int(counts.sum()) < pack_pairs(examples)["input_ids"].shape[1]


def test_dpo_loss_is_the_same_packed_or_padded(tiny_model_dir, tmp_path, pairs):
    from train.model_loading import load_model
    from train.packed_pairs import PackedPairCollator
    from train.preference_data import PreferenceCollator
    from train.stages.dpo import dpo_trainer_class
    from train.worker import StreamBatches, training_arguments

    tokenizer, examples = pairs
    cfg = _cfg(tiny_model_dir, tmp_path, beta=0.2, sft_weight=0.1)
    cls = dpo_trainer_class(cfg, PreferenceOptions.from_config(cfg), [])
    torch.manual_seed(1)
    model = load_model(cfg.model, cfg.finetuning)
    model.config.use_cache = False
    with torch.no_grad():  # move the policy off the reference (a loaded copy), so the log-ratios are not zero
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))
    losses = {}
    for name, collate in (("padded", PreferenceCollator(tokenizer.pad_token_id)), ("packed", PackedPairCollator())):
        trainer = cls(model=model, args=training_arguments(cfg, str(tmp_path / name), 1),
                      train_dataset=StreamBatches(lambda: iter(examples), 4, collate), processing_class=tokenizer)
        batch = trainer._prepare_inputs(collate(examples))
        losses[name] = trainer.dpo_outputs(trainer.model, batch).loss
    assert abs(losses["padded"].item() - 0.6931) > 1e-3
    torch.testing.assert_close(losses["packed"], losses["padded"], atol=1e-5, rtol=1e-5)


def test_padding_free_option_and_its_auto_choice(tiny_model_dir, tmp_path, pairs):
    from train.stages.dpo import padding_free

    tokenizer, _ = pairs
    for given, want in (("auto", True), ("true", True), ("false", False), (True, True), (False, False)):
        cfg = _cfg(tiny_model_dir, tmp_path, padding_free=given)
        assert padding_free(PreferenceOptions.from_config(cfg)) is want, given
        assert padding_free(PreferenceOptions.from_config(cfg), cfg, tokenizer) is want  # bench/peers/step_ab.py's call
    with pytest.raises(TrainConfigError, match="padding_free"):
        PreferenceOptions.from_config(_cfg(tiny_model_dir, tmp_path, padding_free="sometimes"))


def test_precomputed_reference_from_packed_batches_equals_the_copy_on_a_packed_batch(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from train.model_loading import load_model
    from train.packed_pairs import PackedPairCollator
    from train.stages.dpo import dpo_trainer_class
    from train.worker import StreamBatches, training_arguments

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = tokenize_preferences(toy_preference_table(8, seed=4), tokenizer, cutoff_len=96).examples
    trainers = {}
    for reference in ("precompute", "copy"):
        cfg = _cfg(tiny_model_dir, tmp_path, reference=reference)
        cls = dpo_trainer_class(cfg, PreferenceOptions.from_config(cfg), [])
        model = load_model(cfg.model, cfg.finetuning)
        model.config.use_cache = False
        stream = StreamBatches(lambda: iter(examples), 4, PackedPairCollator())
        trainers[reference] = cls(model=model, args=training_arguments(cfg, str(tmp_path / reference), 1),
                                  train_dataset=stream, processing_class=tokenizer)
    trainers["precompute"].precompute_reference()  # one pass over the packed training stream
    assert set(trainers["precompute"].ref_logps) == {e["id"] for e in examples}
    batch = pack_pairs(examples[4:])
    torch.testing.assert_close(trainers["precompute"].reference_logps(trainers["precompute"].model, batch),
                               trainers["copy"].reference_logps(trainers["copy"].model, batch), atol=1e-4, rtol=1e-5)
