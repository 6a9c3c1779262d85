"""Training throughput on CPU for a ~10M-parameter Llama: packed vs padded batches, Ray Train vs bare HF.

    python bench/bench_train.py [--steps 30] [--out bench/results/train.json]

1. packed vs padded: the same SFT-like examples (lengths drawn from a long-tailed
   distribution, 16..512 tokens) trained either bin-packed into 512-token rows
   (flatten_collate, no padding) or 4 examples per padded batch. Reported as real
   (non-padding) tokens per second of training-loop time.
2. Ray Train (1 worker, rows streamed from a Ray Dataset shard) vs the same worker code
   driven by a bare HF Trainer in this process, on the same packed rows. Loop time is
   HF's train_runtime (excludes process/Ray start-up); wall time with start-up is reported too.
Timings are taken on a shared machine under whatever load it has; treat them as indicative.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CUTOFF = 512


def bench_model(cache: Path) -> Path:
    """~10M parameters: hidden 384, 6 layers, the tiny kit's tokenizer (vocab 1024)."""
    from train.tiny import build_model, tiny_model_path
    from transformers import AutoTokenizer

    path = cache / "bench-llama-10m"
    if not (path / "config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
        model = build_model(tokenizer, hidden_size=384, num_layers=6, num_heads=6, num_kv_heads=2,
                            intermediate_size=1024, max_position_embeddings=CUTOFF)
        tokenizer.save_pretrained(path)
        model.save_pretrained(path)
    return path


def examples(n: int, seed: int = 0) -> list:
    """Token-id examples with a realistic long-tailed length spread (median ~90, max 512)."""
    from train.tokenize import EncodedExample

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = max(16, min(CUTOFF, int(rng.lognormvariate(4.5, 0.7))))
        ids = [rng.randrange(10, 1000) for _ in range(length)]
        out.append(EncodedExample(input_ids=ids, labels=ids))
    return out


def unpacked_rows(exs) -> list[dict]:
    return [{"input_ids": e.input_ids, "labels": e.labels, "position_ids": list(range(len(e.input_ids)))} for e in exs]


def real_tokens(rows) -> int:
    return sum(len(r["input_ids"]) for r in rows)


def run_bare(cfg, rows, steps: int, run_dir: Path) -> dict:
    from train.worker import run_causal_lm

    start = time.perf_counter()
    metrics = run_causal_lm(cfg, lambda: rows, None, run_dir, max_steps=steps, save_final=False)
    return {"train_runtime_s": metrics["train_runtime"], "wall_s": time.perf_counter() - start}


def config(model: Path, **extra):
    from train.args import parse_train_config

    return parse_train_config({"stage": "sft", "model": str(model), "learning_rate": 1e-3, "save_steps": 10_000,
                               "logging_steps": 10_000, "lr_scheduler": "constant", "cutoff_len": CUTOFF, **extra})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from train.packing import pack_examples

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    model = bench_model(Path(os.environ.get("RAYMILL_CACHE", Path.home() / ".cache" / "raymill")))
    n_params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(model).parameters())
    exs = examples(2000)
    packed = pack_examples(exs, CUTOFF)
    padded = unpacked_rows(exs)
    results = {"model_params": n_params, "steps": args.steps, "torch_threads": torch.get_num_threads(),
               "cpu_count": os.cpu_count(), "load_avg_at_start": os.getloadavg()[0]}

    # 1. packed vs padded, bare HF Trainer in this process
    batch_padded = 4
    r_packed = run_bare(config(model, per_device_batch_size=1, packing=True), packed, args.steps, work / "packed")
    r_padded = run_bare(config(model, per_device_batch_size=batch_padded, packing=False), padded, args.steps,
                        work / "padded")
    tok_packed = real_tokens(packed[: args.steps])
    tok_padded = real_tokens(padded[: args.steps * batch_padded])
    padded_slots = sum(max(len(r["input_ids"]) for r in padded[i:i + batch_padded]) * batch_padded
                       for i in range(0, args.steps * batch_padded, batch_padded))
    results["packed_vs_padded"] = {
        "packed_tokens_per_s": tok_packed / r_packed["train_runtime_s"],
        "padded_tokens_per_s": tok_padded / r_padded["train_runtime_s"],
        "padded_batch_size": batch_padded, "packed_row_len": CUTOFF,
        "padding_fraction_padded": 1 - tok_padded / padded_slots,
    }
    results["packed_vs_padded"]["speedup"] = (results["packed_vs_padded"]["packed_tokens_per_s"]
                                              / results["packed_vs_padded"]["padded_tokens_per_s"])

    # 2. Ray Train, 1 worker, vs the bare run above (same rows, same steps)
    import ray

    from train.launcher import run_training

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    start = time.perf_counter()
    cfg = config(model, per_device_batch_size=1, packing=True, max_steps=args.steps, output=str(work / "ray"),
                 num_workers=1)
    summary = run_training(cfg, dataset=ray.data.from_items(packed))
    ray_wall = time.perf_counter() - start
    ray_runtime = summary["final_metrics"].get("train_runtime") or json.loads(
        (work / "ray" / "metrics.jsonl").read_text().splitlines()[-1])["train_runtime"]
    ray.shutdown()
    results["ray_vs_bare"] = {
        "bare_tokens_per_s": tok_packed / r_packed["train_runtime_s"],
        "ray_tokens_per_s": tok_packed / ray_runtime,
        "bare_wall_s": r_packed["wall_s"], "ray_wall_s_incl_startup": ray_wall,
    }
    results["ray_vs_bare"]["loop_overhead"] = (results["ray_vs_bare"]["bare_tokens_per_s"]
                                               / results["ray_vs_bare"]["ray_tokens_per_s"] - 1)
    results["load_avg_at_end"] = os.getloadavg()[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
