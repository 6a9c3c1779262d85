"""One training step of raymill vs TRL on the same batch, in one process, alternating (A B A B).

    .venv/bin/python bench/peers/step_ab.py dpo|sft [--reps 8]

No Ray and no data path: both trainers are built in this process on the same model and
pairs (or packed rows), and `training_step` is timed on one fixed batch each, so what is
left is the step itself (collate excluded). Used to find where a step-time gap lives.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def timed(fn, reps: int, clock=time.perf_counter) -> list[float]:
    out = []
    for _ in range(reps):
        start = clock()
        fn()
        out.append(clock() - start)
    return out


def dpo_pair(work: Path, model_path: str, batch_size: int):
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from bench.peers.common import write_dpo_data
    from train.args import parse_train_config
    from train.packed_pairs import PackedPairCollator
    from train.preference_data import (
        PreferenceCollator,
        read_preference_file,
        tokenize_preferences,
    )
    from train.stages.dpo import dpo_trainer_class, padding_free
    from train.stages.preference_stage import PreferenceOptions
    from train.worker import StreamBatches, training_arguments

    data = write_dpo_data(work / "dpo.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    cfg = parse_train_config({"stage": "dpo", "model": model_path, "learning_rate": 1e-4, "cutoff_len": 512,
                              "per_device_batch_size": batch_size, "save_steps": 100000, "logging_steps": 1,
                              "data_options": {"eval_fraction": 0.0}})
    pairs = tokenize_preferences(read_preference_file(data), tokenizer, 512).examples[:batch_size]
    # The batch layout jobs/train.py trains with: packed (padding-free) unless data_options say otherwise.
    collate = (PackedPairCollator() if padding_free(PreferenceOptions.from_config(cfg), cfg, tokenizer)
               else PreferenceCollator(tokenizer.pad_token_id))
    ours_batch = collate(pairs)
    from train.model_loading import load_model

    ours_model = load_model(cfg.model, cfg.finetuning, False)
    ours_model.config.use_cache = False
    cls = dpo_trainer_class(cfg, PreferenceOptions.from_config(cfg), [], str(work))
    ours = cls(model=ours_model, args=training_arguments(cfg, str(work / "ours"), 100),
               train_dataset=StreamBatches(lambda: pairs, batch_size, collate), processing_class=tokenizer)
    ours.create_optimizer_and_scheduler(100)

    trl_model = AutoModelForCausalLM.from_pretrained(model_path, attn_implementation="sdpa", dtype=torch.float32)
    ds = load_dataset("json", data_files=str(data), split="train").select_columns(["prompt", "chosen", "rejected"])
    trl = DPOTrainer(model=trl_model, processing_class=tokenizer, train_dataset=ds, args=DPOConfig(
        output_dir=str(work / "trl"), per_device_train_batch_size=batch_size, max_length=512, beta=0.1,
        use_cpu=True, report_to="none", learning_rate=1e-4,
        bf16=False, fp16=False, gradient_checkpointing=False, optim="adamw_torch"))  # as raymill: fp32, no checkpointing
    trl.create_optimizer_and_scheduler(100)
    trl_batch = trl.data_collator([trl.train_dataset[i] for i in range(batch_size)])
    shapes = {"ours": list(ours_batch["input_ids"].shape), "trl": list(trl_batch["input_ids"].shape)}
    return ours, ours_batch, trl, trl_batch, shapes


def step_fn(trainer, batch):
    trainer.current_gradient_accumulation_steps = 1  # set by the HF training loop, which we skip

    def run():
        trainer.model.train()
        trainer.training_step(trainer.model, dict(batch))
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=["dpo"])
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4, dest="batch_size")
    args = parser.parse_args()
    import torch

    from bench.peers.common import TORCH_THREADS, bench_model_path

    torch.set_num_threads(TORCH_THREADS)
    work = Path(tempfile.mkdtemp(prefix="step-ab-"))
    ours, ours_batch, trl, trl_batch, shapes = dpo_pair(work, str(bench_model_path()), args.batch_size)
    # Wall time and this process's CPU time: on a shared, overloaded machine the wall time
    # grows with the other processes' load, the CPU time much less so.
    times = {"ours": [], "trl": [], "ours_cpu": [], "trl_cpu": []}
    for fn in (step_fn(ours, ours_batch), step_fn(trl, trl_batch)):
        fn()  # warm-up
    ours_step, trl_step = step_fn(ours, ours_batch), step_fn(trl, trl_batch)
    for _ in range(args.rounds * args.reps):  # one step each, alternating, so load drifts hit both alike
        for name, fn in (("ours", ours_step), ("trl", trl_step)):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - wall)
            times[name + "_cpu"].append(time.process_time() - cpu)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"shapes": shapes, "median_s": med, "ratio_ours_over_trl": med["ours"] / med["trl"],
                      "cpu_ratio_ours_over_trl": med["ours_cpu"] / med["trl_cpu"],
                      "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
