"""Evaluation during training (issue 15.2): val_size held out of the packed rows, eval every
N steps, eval curves in the run's plots, and the best checkpoint kept as the final model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from train.args import TrainConfigError, parse_train_config
from train.launcher import run_training


def test_val_size_evals_and_load_best_model_at_end(ray_session, tiny_model_dir, tmp_path):
    from train.default_data import sft_default_sample

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sft_default_sample(48, seed=2)), encoding="utf-8")
    run = tmp_path / "run"
    cfg = parse_train_config({
        "stage": "sft", "model": str(tiny_model_dir), "data": [str(data)], "output": str(run), "cutoff_len": 128,
        "packing": False, "val_size": 8, "eval_steps": 2, "save_steps": 2, "save_total_limit": 10, "max_steps": 8,
        "learning_rate": 3e-3, "load_best_model_at_end": True,
    })
    summary = run_training(cfg)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r["eval_loss"] for r in records if "eval_loss" in r}
    assert sorted(evals) == [2, 4, 6, 8]  # every eval_steps, on the held-out rows
    assert "eval_loss.png" in summary["plots"] and (run / "eval_loss.png").is_file()
    stats = json.loads((run / "data_stats.json").read_text())
    assert summary["max_steps"] == 8 and stats["sequences"] == stats["examples"]  # unpacked: one row per example
    states = sorted(Path(run, "hf", "rank0").glob("checkpoint-*/trainer_state.json"))
    final = json.loads(states[-1].read_text())
    best_step = min(evals, key=evals.get)
    assert final["best_metric"] == pytest.approx(evals[best_step], rel=1e-6)
    assert final["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")


def test_eval_options_are_checked_before_training():
    with pytest.raises(TrainConfigError, match="needs an eval set"):
        parse_train_config({"stage": "sft", "load_best_model_at_end": True})
    with pytest.raises(TrainConfigError, match="save_steps .3. must be a multiple of eval_steps .2."):
        parse_train_config({"stage": "sft", "val_size": 0.1, "eval_steps": 2, "save_steps": 3, "logging_steps": 1,
                            "load_best_model_at_end": True})
