"""TRL DPOTrainer on the side-by-side setup: the peer bench/bench_train_vs_trl.py compares raymill's DPO with.

    .venv/bin/python bench/peers/trl_dpo_bench.py --data PAIRS.jsonl --out DIR [--steps 30]

Same model (bench/bench_train.py's ~9.6M Llama, fully trained; TRL makes the frozen
reference copy itself), the pairs in TRL's conversational prompt/chosen/rejected format,
batch 4, max length 512, beta 0.1, sigmoid loss, lr 1e-4, fp32, 2 torch threads, every
step logged. Writes DIR/steps.jsonl (one line per step: time_s, loss) and DIR/summary.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

START = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default=None, help="default: the bench model")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--max-length", type=int, default=512, dest="max_length")
    parser.add_argument("--batch-size", type=int, default=4, dest="batch_size")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    from bench.peers.common import load_peer_model, step_clock_callback, torch_versions

    out = Path(args.out)
    model_path, tokenizer, model = load_peer_model(args.model)
    dataset = load_dataset("json", data_files=args.data, split="train").select_columns(["prompt", "chosen", "rejected"])
    config = DPOConfig(
        output_dir=str(out / "hf"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=1e-4, lr_scheduler_type="linear", logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=True, disable_tqdm=True, seed=42, max_length=args.max_length, beta=0.1, loss_type=["sigmoid"],
        dataloader_num_workers=0,
        # TRL's configs default to bf16 autocast and gradient checkpointing; raymill's bench run is fp32
        # without checkpointing, with torch's (unfused) AdamW: the same work on both sides.
        bf16=False, fp16=False, gradient_checkpointing=False, optim="adamw_torch",
    )
    clock = step_clock_callback(out / "steps.jsonl")
    # What each training forward of the policy computes: its padded positions (2B x the batch's
    # longest) and the real tokens among them; raymill's metrics.jsonl counts its own positions.
    computed = {"forwards": 0, "positions": 0, "tokens": 0}

    def count_positions(module, args, kwargs):
        if module.training and kwargs.get("input_ids") is not None:
            computed["forwards"] += 1
            computed["positions"] += kwargs["input_ids"].numel()
            mask = kwargs.get("attention_mask")
            computed["tokens"] += int(mask.sum()) if mask is not None else kwargs["input_ids"].numel()

    model.register_forward_pre_hook(count_positions, with_kwargs=True)
    setup_s = time.perf_counter() - START
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[clock])
    trainer_init_s = time.perf_counter() - START - setup_s  # TRL tokenizes the pairs and copies the reference here
    result = trainer.train()
    trainer.save_model(str(out / "model"))
    summary = {"peer": "trl.DPOTrainer", "steps": trainer.state.global_step, "train_runtime_s": result.metrics["train_runtime"],
               "setup_s": round(setup_s, 3), "tokenize_and_reference_s": round(trainer_init_s, 3),
               "pairs": len(trainer.train_dataset), "versions": torch_versions(),
               "positions_per_step": computed["positions"] / max(1, computed["forwards"]),
               "real_tokens_per_step": computed["tokens"] / max(1, computed["forwards"]),
               "in_process_s": round(time.perf_counter() - START, 3)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
