"""The Ray Train launcher end to end: real ingest, real TorchTrainer workers, DeepSpeed on CPU, resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import TrainerCallback

from train.args import parse_train_config
from train.launcher import TrainingRunError, run_training
from train.worker import run_causal_lm


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def logged(run_dir: Path) -> dict[int, dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in records if "loss" in r}


def card_tokens(run: Path, record_id: str) -> int:
    import pyarrow.parquet as pq

    return pq.read_table(run / "train_data" / "data", filters=[("id", "=", record_id)]).column("tokens")[0].as_py()


def test_sft_run_on_ray_with_real_ingest_writes_every_output(ray_session, tiny_model_dir, tmp_path):
    from train.default_data import sft_default_sample

    data = write_jsonl(tmp_path / "sft.jsonl", sft_default_sample(24, seed=5))
    cfg = parse_train_config({
        "stage": "sft", "model": str(tiny_model_dir), "data": [str(data)], "output": str(tmp_path / "run"),
        "cutoff_len": 128, "per_device_batch_size": 2, "max_steps": 16, "save_steps": 8, "learning_rate": 3e-3,
        "lr_scheduler": "wsd", "warmup_steps": 2, "decay_ratio": 0.25,
    })
    summary = run_training(cfg)
    run = tmp_path / "run"
    for name in ("metrics.jsonl", "loss.png", "lr.png", "run_summary.json", "train_config.yaml", "data_stats.json"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "model" / "model.safetensors").is_file()
    assert summary["latest_checkpoint"] and (Path(summary["latest_checkpoint"]) / "checkpoint" / "trainer_state.json").is_file()
    stats = json.loads((run / "data_stats.json").read_text())
    assert stats["records"] == 24 and stats["dropped"] + stats["examples"] == 24
    # the training set's own card: one row per record, kept/dropped as the stats count them
    from schemas.card import read_card

    card = read_card(run / "train_data" / "card" / "card.arrow")
    assert (card.rows_kept, card.rows_dropped) == (stats["examples"], stats["dropped"])
    assert summary["data_card"] == str(run / "train_data" / "card") and (run / "train_data" / "card" / "card.md").is_file()
    # ... and its lineage: `jobs/card.py RUN --trace ID` finds a record's packed sequence
    from jobs.card import trace_text

    tokens = card_tokens(run, "default-sft-0")
    assert f"outcome   trained: {tokens} tokens in 1 packed sequence" in trace_text(str(run), "default-sft-0")
    steps = logged(run)
    assert sorted(steps) == list(range(1, 17))
    assert steps[16]["loss"] < steps[1]["loss"]
    # WSD: flat at the peak in the middle, decayed at the end
    assert steps[6]["learning_rate"] == pytest.approx(3e-3) and steps[16]["learning_rate"] < 1.5e-3

    # the same output dir again without --resume is refused instead of silently resuming
    with pytest.raises(ValueError, match="already holds a run"):
        run_training(cfg)
    # --resume on the finished run trains nothing more (HF alone would take a step past max_steps)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    again = run_training(parse_train_config({**cfg.to_dict(), "resume": True}))
    assert "nothing to train" in again["note"] and again["last_loss"] == summary["last_loss"]
    assert (run / "metrics.jsonl").read_text().splitlines() == lines


def test_bad_inputs_fail_before_training(ray_session, tiny_model_dir, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "reply": "a"}])
    base = {"stage": "sft", "model": str(tiny_model_dir), "output": str(tmp_path / "run"), "max_steps": 2}
    with pytest.raises(ValueError, match="cannot tell the format"):
        run_training(parse_train_config({**base, "data": [str(bad)]}))
    with pytest.raises(ValueError, match="unknown template"):
        run_training(parse_train_config({**base, "template": "nonesuch", "output": str(tmp_path / "r2")}))
    with pytest.raises(ValueError, match="unknown stage"):
        run_training(parse_train_config({**base, "stage": "sft2", "output": str(tmp_path / "r3")}))
    # alpaca rows without their `output` column: every record is a counted drop, then a clear error
    partial = write_jsonl(tmp_path / "partial.jsonl", [{"instruction": f"Say {i}."} for i in range(3)])
    with pytest.raises(ValueError, match=r"no training examples left: 3 records read.*missing_field: 3"):
        run_training(parse_train_config({**base, "data": [str(partial)], "output": str(tmp_path / "r4"),
                                         "max_steps": -1}))


def identical_rows(model_dir: Path, n: int = 16, length: int = 48) -> list[dict]:
    """The same packed row n times: every worker sees the same data whatever the split,
    so a 2-worker run must follow the single-process run step for step."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(model_dir)(" ".join(["A student builds a simple plan today."] * 8))["input_ids"]
    ids = ids[:length]
    return [{"input_ids": ids, "labels": ids, "position_ids": list(range(len(ids)))} for _ in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_deepspeed_two_workers_match_single_process(ray_session, tiny_model_dir, tmp_path, zero):
    rows = identical_rows(tiny_model_dir)
    common = {"stage": "pt", "model": str(tiny_model_dir), "max_steps": 6, "save_steps": 6, "learning_rate": 5e-3,
              "lr_scheduler": "linear"}
    single = tmp_path / "single"
    run_causal_lm(parse_train_config({**common, "per_device_batch_size": 2}), lambda: rows, None, single, max_steps=6)
    cfg = parse_train_config({**common, "per_device_batch_size": 1, "num_workers": 2, "deepspeed": zero,
                              "output": str(tmp_path / zero)})
    run_training(cfg, dataset=ray_session.data.from_items(rows))
    reference, distributed = logged(single), logged(tmp_path / zero)
    assert sorted(distributed) == list(range(1, 7))
    assert distributed[6]["loss"] < distributed[1]["loss"]
    for step in range(1, 7):
        assert distributed[step]["loss"] == pytest.approx(reference[step]["loss"], rel=0.02), step
    assert (tmp_path / zero / "model" / "model.safetensors").is_file()


class CrashAt(TrainerCallback):
    """Crash right after step `step` is logged (on_step_end would come before the step's log)."""

    def __init__(self, step):
        self.step = step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step == self.step and logs and "loss" in logs:
            raise RuntimeError(f"simulated crash at step {self.step}")


@pytest.mark.slow
def test_resume_from_ray_checkpoint_continues_step_and_lr(ray_session, tiny_model_dir, tmp_path):
    rows = identical_rows(tiny_model_dir, n=8)
    raw = {"stage": "pt", "model": str(tiny_model_dir), "max_steps": 8, "save_steps": 4, "learning_rate": 1e-3,
           "lr_scheduler": "cosine", "output": str(tmp_path / "run")}
    with pytest.raises(TrainingRunError, match="simulated crash at step 6"):
        run_training(parse_train_config(raw), dataset=ray_session.data.from_items(rows), callbacks=[CrashAt(6)])
    before = logged(tmp_path / "run")
    assert max(before) == 6
    # A hard stop (Ctrl-C, a lost driver) can leave Ray's checkpoints without the checkpoint
    # manager's snapshot Ray restores from: --resume must then find the latest one on disk.
    (tmp_path / "run" / "ray" / "checkpoint_manager_snapshot.json").unlink()
    run_training(parse_train_config({**raw, "resume": True}), dataset=ray_session.data.from_items(rows))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # the resumed run starts after the step-4 checkpoint; its steps 5-6 replace the stopped run's
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 9))
    after = logged(tmp_path / "run")
    for step in (5, 6):  # same LR from the schedule, same batch from the restored data position
        assert after[step]["learning_rate"] == pytest.approx(before[step]["learning_rate"], rel=1e-6)
        assert after[step]["loss"] == pytest.approx(before[step]["loss"], rel=1e-3)
