"""Training throughput on CPU for a ~10M-parameter Llama: packed vs padded batches, Ray Train vs bare HF.

    python bench/bench_train.py [--steps 30] [--ray-steps 60] [--out bench/results/train.json]

1. packed vs padded: the same SFT-like examples (lengths drawn from a long-tailed
   distribution, 16..512 tokens) trained either bin-packed into 512-token rows
   (flatten_collate, no padding) or 4 examples per padded batch. Reported as real
   (non-padding) tokens per second of training-loop time.
2. Ray Train (1 worker, rows streamed from a Ray Dataset shard) vs the same worker code
   driven by a bare HF Trainer in this process, on the same packed rows. Reported: the
   steady-state time per step (after WARMUP_STEPS, from metrics.jsonl), HF's train_runtime
   (the whole loop, first steps included), and wall time with process/Ray start-up.
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
MACHINE_NOTE = ("timings from whatever machine runs this; on a shared 2-core box compare the ratios, not the "
                "absolute numbers, and expect a few percent of noise between runs")
WARMUP_STEPS = 10  # excluded from the steady-state step time (allocator warm-up, Ray start-up activity)


def bench_model(cache: Path) -> Path:
    """~10M parameters: hidden 384, 6 layers, the tiny kit's tokenizer (a ~500-token byte-level BPE)."""
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


def examples(n: int, vocab_size: int, seed: int = 0) -> list:
    """Token-id examples with a realistic long-tailed length spread (median ~90, max 512)."""
    from train.tokenize import EncodedExample

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = max(16, min(CUTOFF, int(rng.lognormvariate(4.5, 0.7))))
        ids = [rng.randrange(10, vocab_size) for _ in range(length)]  # past the special tokens
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
    parser.add_argument("--steps", type=int, default=30, help="steps of the packed-vs-padded runs")
    parser.add_argument("--ray-steps", type=int, default=60, dest="ray_steps", help="steps of the Ray-vs-bare runs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from train.packing import pack_examples

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    model = bench_model(Path(os.environ.get("RAYMILL_CACHE", Path.home() / ".cache" / "raymill")))
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(model)
    n_params, vocab_size = sum(p.numel() for p in lm.parameters()), lm.config.vocab_size
    del lm
    exs = examples(2000, vocab_size)
    packed = pack_examples(exs, CUTOFF)
    padded = unpacked_rows(exs)
    results = {"machine_note": MACHINE_NOTE, "model_params": n_params, "steps": args.steps, "torch_threads": torch.get_num_threads(),
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

    # 2. Ray Train, 1 worker, vs a bare HF Trainer in this process: same packed rows, same steps,
    # every step logged in both, so the steady-state step time excludes start-up and warm-up.
    import ray

    from train.launcher import run_training
    from train.run_outputs import read_metrics

    def step_times(run_dir: Path) -> list[float]:
        return [r["time_s"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]

    def per_step(times: list[float]) -> float:
        return (times[-1] - times[WARMUP_STEPS]) / (len(times) - 1 - WARMUP_STEPS)

    steps = args.ray_steps
    r_bare = run_bare(config(model, per_device_batch_size=1, logging_steps=1), packed, steps, work / "bare")
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    start = time.perf_counter()
    cfg = config(model, per_device_batch_size=1, logging_steps=1, max_steps=steps, output=str(work / "ray"),
                 num_workers=1)
    run_training(cfg, dataset=ray.data.from_items(packed))
    ray_wall = time.perf_counter() - start
    ray.shutdown()
    ray_runtime = [r for r in read_metrics(work / "ray" / "metrics.jsonl") if "train_runtime" in r and "loss" not in r]
    bare_step, ray_step = per_step(step_times(work / "bare")), per_step(step_times(work / "ray"))
    tokens = real_tokens(packed[:steps])
    results["ray_vs_bare"] = {
        "steps": steps, "warmup_steps_excluded": WARMUP_STEPS,
        "bare_s_per_step": bare_step, "ray_s_per_step": ray_step,
        "steady_state_overhead": ray_step / bare_step - 1,
        "bare_loop_tokens_per_s": tokens / r_bare["train_runtime_s"],
        "ray_loop_tokens_per_s": tokens / ray_runtime[-1]["train_runtime"],
        "bare_wall_s": r_bare["wall_s"], "ray_wall_s_incl_startup": ray_wall,
    }
    results["ray_vs_bare"]["loop_overhead_incl_first_steps"] = (
        results["ray_vs_bare"]["bare_loop_tokens_per_s"] / results["ray_vs_bare"]["ray_loop_tokens_per_s"] - 1)
    results["load_avg_at_end"] = os.getloadavg()[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
