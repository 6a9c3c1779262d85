"""TRL SFTTrainer on the side-by-side setup: the peer bench/bench_train_vs_trl.py compares raymill's SFT with.

    .venv/bin/python bench/peers/trl_sft_bench.py --data SFT.jsonl --out DIR [--steps 60]

Same model (bench/bench_train.py's ~9.6M Llama), same conversations, rows packed to
1,024 tokens by TRL's best-fit-decreasing packing (which makes the batch padding-free:
one flattened row with restarting position_ids, as raymill's), batch 1, lr 1e-4, fp32,
2 torch threads, every step logged. Writes DIR/steps.jsonl (one line per step: time_s,
TRL's cumulative num_tokens) and DIR/summary.json.
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
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--max-length", type=int, default=1024, dest="max_length")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from bench.peers.common import load_peer_model, step_clock_callback, torch_versions

    out = Path(args.out)
    model_path, tokenizer, model = load_peer_model(args.model)
    dataset = load_dataset("json", data_files=args.data, split="train").select_columns(["messages"])
    config = SFTConfig(
        output_dir=str(out / "hf"), max_steps=args.steps, per_device_train_batch_size=1, learning_rate=1e-4,
        lr_scheduler_type="linear", logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        disable_tqdm=True, seed=42, max_length=args.max_length, packing=True, packing_strategy="bfd",
        dataloader_num_workers=0,
        # TRL's configs default to bf16 autocast and gradient checkpointing; raymill's bench run is fp32
        # without checkpointing, with torch's (unfused) AdamW: the same work on both sides.
        bf16=False, fp16=False, gradient_checkpointing=False, optim="adamw_torch",
    )
    clock = step_clock_callback(out / "steps.jsonl")
    setup_s = time.perf_counter() - START
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[clock])
    trainer_init_s = time.perf_counter() - START - setup_s  # TRL tokenizes and packs the dataset here
    result = trainer.train()
    trainer.save_model(str(out / "model"))
    summary = {"peer": "trl.SFTTrainer", "steps": trainer.state.global_step, "train_runtime_s": result.metrics["train_runtime"],
               "setup_s": round(setup_s, 3), "tokenize_and_pack_s": round(trainer_init_s, 3),
               "packed_rows": len(trainer.train_dataset), "versions": torch_versions(),
               "in_process_s": round(time.perf_counter() - START, 3)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
