"""Finetuning types and the in-process training worker (no Ray): what trains, loss goes down,
resume continues the LR schedule and the data position, NaN loss stops cleanly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, TrainerCallback

from train.args import TrainConfigError, parse_train_config
from train.callbacks import NonFiniteLossError
from train.collate import flatten_collate
from train.finetune import apply_finetuning, count_parameters, find_layer_indices, layer_index
from train.model_loading import load_model
from train.packing import pack_examples
from train.templates import get_template
from train.tokenize import EncodedExample, encode_sft
from train.worker import run_causal_lm


def sft_rows(model_dir: Path, n: int = 12, cutoff: int = 96) -> list[dict]:
    """Packed SFT rows built by the real template/tokenize/packing functions (no Ray)."""
    from train.default_data import sft_default_sample

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    template = get_template("chatml")
    encoded = [encode_sft(r, tokenizer, template, cutoff) for r in sft_default_sample(n, seed=3)]
    return pack_examples([e for e in encoded if isinstance(e, EncodedExample)], cutoff)


def pt_rows(model_dir: Path, n: int = 8, cutoff: int = 64) -> list[dict]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = " ".join(["The river measures the results today."] * 40)
    ids = tokenizer(text)["input_ids"]
    return [{"input_ids": ids[i:i + cutoff], "labels": ids[i:i + cutoff], "position_ids": list(range(cutoff))}
            for i in range(0, cutoff * n, cutoff) if len(ids[i:i + cutoff]) == cutoff]


def config(model_dir, **extra):
    base = {"model": str(model_dir), "learning_rate": 3e-3, "per_device_batch_size": 2, "save_steps": 100,
            "lr_scheduler": "constant"}
    return parse_train_config({**base, **extra})


def train_steps(model, rows, steps=3, lr=1e-2):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(steps):
        batch = flatten_collate(rows[step % len(rows): step % len(rows) + 2])
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().clone() for n, p in model.named_parameters()}


def changed(before, model) -> set[str]:
    after = dict(model.named_parameters())
    return {n for n, t in before.items() if not torch.equal(t, after[n].detach().float())}


@pytest.mark.parametrize("kind", ["full", "freeze", "lora", "dora"])
def test_right_parameters_train_and_frozen_ones_do_not_change(tiny_model_dir, kind):
    extra = {"finetuning_type": "lora", "use_dora": True} if kind == "dora" else {"finetuning_type": kind}
    cfg = config(tiny_model_dir, freeze_trainable_layers=1, freeze_trainable_modules=["norm"], lora_rank=4, **extra)
    model = apply_finetuning(load_model(cfg.model, cfg.finetuning), cfg.finetuning)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    last = max(find_layer_indices(model))
    if kind == "full":
        assert trainable == {n for n, _ in model.named_parameters()}
    elif kind == "freeze":
        expected = {n for n, _ in model.named_parameters() if layer_index(n) == last or n.endswith("model.norm.weight")}
        assert trainable == expected
    else:
        assert trainable and all("lora_" in n for n in trainable)
        assert any("lora_magnitude_vector" in n for n in trainable) == (kind == "dora")
        # `all` = every linear layer of the blocks, never the output head
        assert {n.split(".lora_")[0].split(".")[-1] for n in trainable} == {
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert count_parameters(model)[0] == sum(p.numel() for n, p in model.named_parameters() if n in trainable)

    before = snapshot(model)
    train_steps(model, sft_rows(tiny_model_dir))
    moved = changed(before, model)
    frozen = set(before) - trainable
    assert not (moved & frozen), f"frozen parameters changed: {sorted(moved & frozen)[:3]}"
    if kind == "dora" or kind == "lora":
        assert any("lora_B" in n for n in moved)  # B starts at zero; it must move for the adapter to do anything
    else:
        assert len(moved) >= 0.8 * len(trainable)


def test_freeze_finds_layers_without_num_hidden_layers(tiny_model_dir):
    """GPT-2-style `h.<i>` blocks and a config that hides the layer count."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=64, n_positions=32))
    del model.config.n_layer  # no layer count in the config at all
    cfg = config(tiny_model_dir, finetuning_type="freeze", freeze_trainable_layers=2)
    apply_finetuning(model, cfg.finetuning)
    trainable_layers = {layer_index(n) for n, p in model.named_parameters() if p.requires_grad}
    assert trainable_layers == {1, 2}


def test_freeze_and_lora_bad_names(tiny_model_dir):
    model = load_model(config(tiny_model_dir).model, config(tiny_model_dir).finetuning)
    with pytest.raises(TrainConfigError, match="match no parameter"):
        apply_finetuning(model, config(tiny_model_dir, finetuning_type="freeze", freeze_trainable_modules=["nope"]).finetuning)
    with pytest.raises(TrainConfigError, match="match no module"):
        apply_finetuning(model, config(tiny_model_dir, finetuning_type="lora", lora_target=["qkv"]).finetuning)
    with pytest.raises(TrainConfigError, match="has 2 layers"):
        apply_finetuning(model, config(tiny_model_dir, finetuning_type="freeze", freeze_trainable_layers=5).finetuning)


def test_qlora_on_cpu_trains_only_adapters(tiny_model_dir):
    cfg = config(tiny_model_dir, finetuning_type="qlora", quantization_bit=4, lora_rank=4)
    model = apply_finetuning(load_model(cfg.model, cfg.finetuning), cfg.finetuning)
    assert type(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = snapshot(model)
    rows = sft_rows(tiny_model_dir)
    # train mode: bitsandbytes' CPU eval path repacks weights and needs dims divisible by 32 (176 is not)
    model.train()
    with torch.no_grad():
        start = model(**flatten_collate(rows[:2])).loss.item()
    train_steps(model, rows[:2], steps=6, lr=2e-2)
    with torch.no_grad():
        end = model(**flatten_collate(rows[:2])).loss.item()
    moved = changed(before, model)
    assert moved and moved <= trainable
    assert end < start


def losses(run_dir: Path) -> dict[int, dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in records if "loss" in r}


@pytest.mark.parametrize("stage", ["pt", "sft"])
def test_worker_reduces_loss_on_a_memorisable_set(tiny_model_dir, tmp_path, stage):
    rows = pt_rows(tiny_model_dir) if stage == "pt" else sft_rows(tiny_model_dir, n=6)
    cfg = config(tiny_model_dir, stage=stage, per_device_batch_size=2)
    metrics = run_causal_lm(cfg, lambda: rows, None, tmp_path, max_steps=24)
    logged = losses(tmp_path)
    first, last = logged[1]["loss"], sum(logged[s]["loss"] for s in (22, 23, 24)) / 3
    assert last < 0.6 * first, (first, last)
    assert metrics["global_step"] == 24
    assert (tmp_path / "model" / "model.safetensors").exists()


def test_lora_run_saves_adapters_only(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, finetuning_type="lora", lora_rank=4)
    run_causal_lm(cfg, lambda: sft_rows(tiny_model_dir, n=4), None, tmp_path, max_steps=2)
    saved = {p.name for p in (tmp_path / "model").iterdir()}
    assert "adapter_model.safetensors" in saved and "adapter_config.json" in saved
    assert "model.safetensors" not in saved


class CrashAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError(f"simulated crash at step {self.step}")


def test_resume_continues_lr_schedule_and_data_position(tiny_model_dir, tmp_path):
    rows = sft_rows(tiny_model_dir, n=12)
    cfg = config(tiny_model_dir, lr_scheduler="cosine", warmup_steps=2, save_steps=4, per_device_batch_size=1)
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    run_causal_lm(cfg, lambda: rows, None, reference, max_steps=10)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_causal_lm(cfg, lambda: rows, None, crashed, max_steps=10, extra_callbacks=[CrashAt(6)])
    checkpoint = crashed / "hf" / "rank0" / "checkpoint-4"
    assert checkpoint.is_dir() and not (crashed / "hf" / "rank0" / "checkpoint-8").exists()
    assert max(losses(crashed)) == 5  # logged past the checkpoint before the crash
    run_causal_lm(cfg, lambda: rows, None, crashed, max_steps=10, resume_from=str(checkpoint))
    ref, resumed = losses(reference), losses(crashed)
    # steps 5.. logged before the crash were replaced by the resumed run's: each step once
    logged_steps = [json.loads(line)["step"] for line in (crashed / "metrics.jsonl").read_text().splitlines()
                    if "loss" in json.loads(line)]
    assert logged_steps == list(range(1, 11))
    for step in range(5, 11):
        assert resumed[step]["learning_rate"] == pytest.approx(ref[step]["learning_rate"], rel=1e-6)
        # same batches in the same order after the skip -> the same losses as the uninterrupted run
        assert resumed[step]["loss"] == pytest.approx(ref[step]["loss"], rel=1e-3)


class PoisonAfter(TrainerCallback):
    """Sets a weight to NaN after `step`, so the next loss is NaN."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, save_steps=2)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step 4.*checkpoint-2"):
        run_causal_lm(cfg, lambda: sft_rows(tiny_model_dir, n=6), None, tmp_path, max_steps=10,
                      extra_callbacks=[PoisonAfter(3)])
    checkpoints = sorted(p.name for p in (tmp_path / "hf" / "rank0").iterdir())
    assert checkpoints == ["checkpoint-2"]
    assert not (tmp_path / "model").exists()


def test_from_scratch_builds_random_weights_from_a_config(tiny_model_dir, tmp_path):
    """pt --from-scratch: the architecture of `model_config` (a file or directory), fresh weights."""
    import shutil

    trained = load_model(config(tiny_model_dir).model, config(tiny_model_dir).finetuning)
    only_config = tmp_path / "arch"
    only_config.mkdir()
    shutil.copy(tiny_model_dir / "config.json", only_config / "config.json")
    for source in (str(only_config), str(only_config / "config.json")):
        cfg = config(tiny_model_dir, stage="pt", from_scratch=True, model_config=source)
        fresh = load_model(cfg.model, cfg.finetuning)
        assert type(fresh) is type(trained) and fresh.config.hidden_size == trained.config.hidden_size
        assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in trained.parameters())
        weight = "model.layers.0.self_attn.q_proj.weight"
        assert not torch.equal(dict(fresh.named_parameters())[weight], dict(trained.named_parameters())[weight])
    from train.model_loading import ModelLoadError

    with pytest.raises(ModelLoadError, match="does not exist"):
        bad = config(tiny_model_dir, stage="pt", from_scratch=True, model_config=str(tmp_path / "nope.json"))
        load_model(bad.model, bad.finetuning)


def test_neftune_noise_changes_the_training_loss(tiny_model_dir, tmp_path):
    """NEFTune adds noise to the input embeddings while training: same data and seed, other loss."""
    rows = sft_rows(tiny_model_dir, n=4)
    run_causal_lm(config(tiny_model_dir), lambda: rows, None, tmp_path / "plain", max_steps=2, save_final=False)
    run_causal_lm(config(tiny_model_dir, neftune_noise_alpha=15.0), lambda: rows, None, tmp_path / "noisy",
                  max_steps=2, save_final=False)
    plain, noisy = losses(tmp_path / "plain"), losses(tmp_path / "noisy")
    assert plain[1]["loss"] != pytest.approx(noisy[1]["loss"], rel=1e-4)
