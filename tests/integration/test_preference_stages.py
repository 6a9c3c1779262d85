"""Stages rm and dpo through the launcher on local Ray: counted drops, eval metrics, saved models,
and 2-worker DeepSpeed ZeRO-2 runs."""
from __future__ import annotations

import json

import pytest

from train.args import parse_train_config
from train.launcher import run_training

PAIRS = [
    {"prompt": f"Write one sentence about the garden {i}.", "chosen": f"The garden number {i} grows well today.",
     "rejected": f"garden garden the {i} grows"}
    for i in range(48)
] + [
    {"prompt": "Say hi.", "chosen": "Hi there.", "rejected": "Hi there."},          # identical_responses
    {"prompt": "Say hi.", "chosen": "", "rejected": "Hello."},                      # empty_response
    {"prompt": "word " * 300, "chosen": "Fine.", "rejected": "Bad."},               # prompt_exceeds_cutoff
]


@pytest.fixture()
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in PAIRS) + "\n", encoding="utf-8")
    return path


def _config(tiny_model_dir, tmp_path, pairs_file, stage, **extra):
    raw = {"model": str(tiny_model_dir), "stage": stage, "data": [str(pairs_file)], "output": str(tmp_path / stage),
           "cutoff_len": 96, "max_steps": 4, "per_device_batch_size": 4, "learning_rate": 1e-3, "logging_steps": 2,
           "save_steps": 4, "lr_scheduler": "constant", "cpus_per_worker": 0.5,
           "data_options": {"eval_fraction": 0.2}}
    raw.update(extra)
    return parse_train_config(raw)


def _check_common(summary, run_dir):
    assert summary["error"] is None
    stats = json.loads((run_dir / "data_stats.json").read_text())
    assert stats["rows_in"] == len(PAIRS)
    assert stats["dropped"] == {"identical_responses": 1, "empty_response": 1, "prompt_exceeds_cutoff": 1}
    assert stats["train_pairs"] + stats["eval_pairs"] == 48 and stats["eval_pairs"] > 0
    from schemas.card import read_card

    card = read_card(run_dir / "train_data" / "card" / "card.arrow")
    assert (card.rows_kept, card.rows_dropped) == (48, 3)
    assert {d["reason"] for d in card.table("drops").to_pylist()} == set(stats["dropped"])
    return json.loads((run_dir / "eval_metrics.json").read_text())


@pytest.mark.slow
def test_rm_stage_two_workers_zero2(ray_session, tiny_model_dir, tmp_path, pairs_file):
    from train.reward_model import load_reward_model

    cfg = _config(tiny_model_dir, tmp_path, pairs_file, "rm", num_workers=2, deepspeed="zero2")
    summary = run_training(cfg)
    run_dir = tmp_path / "rm"
    evaluation = _check_common(summary, run_dir)
    assert 0.0 <= evaluation["eval_accuracy"] <= 1.0 and "eval_margin" in evaluation
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("accuracy" in r and "margin" in r for r in records)
    model = load_reward_model(run_dir / "model")
    scores = model.score_responses([[{"role": "user", "content": "Write one sentence about the garden 3."}]] * 2,
                                   ["The garden number 3 grows well today.", "garden garden the 3 grows"])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)


@pytest.mark.slow
def test_dpo_stage_two_workers_zero2_lora(ray_session, tiny_model_dir, tmp_path, pairs_file):
    cfg = _config(tiny_model_dir, tmp_path, pairs_file, "dpo", num_workers=2, deepspeed="zero2",
                  finetuning_type="lora", data_options={"eval_fraction": 0.2, "sft_weight": 0.1, "beta": 0.2})
    summary = run_training(cfg)
    run_dir = tmp_path / "dpo"
    evaluation = _check_common(summary, run_dir)
    for key in ("eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/accuracies", "eval_rewards/margins"):
        assert key in evaluation
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in records if "rewards/margins" in r]
    assert trained and all("sft_loss" in r for r in trained)
    assert (run_dir / "model" / "adapter_config.json").exists()


def test_dpo_stage_one_worker_precomputed_reference(ray_session, tiny_model_dir, tmp_path, pairs_file):
    cfg = _config(tiny_model_dir, tmp_path, pairs_file, "dpo", max_steps=3,
                  data_options={"eval_fraction": 0.2, "reference": "precompute", "loss_type": "ipo"})
    summary = run_training(cfg)
    evaluation = _check_common(summary, tmp_path / "dpo")
    assert "eval_rewards/margins" in evaluation
    assert (tmp_path / "dpo" / "model" / "model.safetensors").exists()
