"""Benchmark of the training data path -> bench/results/train_data.json.

1. Packing efficiency (real tokens / slots) on SFT data with a realistic length spread:
   the Self-Instruct seed tasks (../shared/data/self_instruct, skipped when absent) and
   the embedded default sample, plus synthetic long multi-turn examples; best-fit-
   decreasing packing into cutoff_len versus padding to the longest in a batch.
2. Tokens/s of the data path alone: in one process (encode + mask + pack), and through
   Ray Data (read, convert, tokenize, pack, iterate with flatten_collate).
3. Tokens/s of a training step of the tiny model on the same packed batches, to check the
   data path is not the bottleneck (target: >= 10x).

Timings are taken on a shared machine under load; compare ratios, not absolutes.

    python bench/bench_train_data.py [--cutoff 1024] [--n-long 300]
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from schemas.dataset_io import write_json  # noqa: E402
from train.collate import flatten_collate  # noqa: E402
from train.default_data import sft_default_sample  # noqa: E402
from train.packing import BinPacker, padding_efficiency  # noqa: E402
from train.templates import get_template  # noqa: E402
from train.tiny import default_corpus, tiny_model_path  # noqa: E402
from train.tokenize import Drop, encode_sft  # noqa: E402

SHARED = Path(os.environ.get("RAYMILL_SHARED_DATA", REPO.parent / "shared" / "data"))


def seed_task_conversations() -> list[dict]:
    out = []
    for name in ("seed_tasks.jsonl", "zh_seed_tasks.jsonl"):
        path = SHARED / "self_instruct" / name
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            task = json.loads(line)
            for k, inst in enumerate(task["instances"]):
                prompt = task["instruction"] + (("\n\n" + inst["input"]) if inst.get("input") else "")
                out.append({"id": f"{task['id']}-{k}", "messages": [
                    {"role": "user", "content": prompt}, {"role": "assistant", "content": inst["output"]}]})
    return out


def synthetic_long(n: int, seed: int = 0) -> list[dict]:
    """Multi-turn conversations with log-normally spread lengths (a long tail)."""
    rng = random.Random(seed)
    sentences = default_corpus(4000, seed=seed)
    out = []
    for i in range(n):
        turns = []
        for _ in range(rng.randint(1, 4)):
            q = " ".join(rng.choices(sentences, k=max(1, int(rng.lognormvariate(1.0, 0.8)))))
            a = " ".join(rng.choices(sentences, k=max(1, int(rng.lognormvariate(2.2, 0.9)))))
            turns += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        out.append({"id": f"long-{i}", "messages": turns})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cutoff", type=int, default=1024)
    parser.add_argument("--n-long", type=int, default=300)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--pad-batch", type=int, default=8)
    parser.add_argument("--ray", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "train_data.json"))
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = tiny_model_path()
    tok = AutoTokenizer.from_pretrained(model_dir)
    template = get_template("chatml")
    seeds = seed_task_conversations()
    rows = seeds + sft_default_sample(600) + synthetic_long(args.n_long)
    random.Random(0).shuffle(rows)

    # 1 + 2a: in-process encode + mask + pack
    start = time.perf_counter()
    encoded = [encode_sft(r, tok, template, args.cutoff) for r in rows]
    t_encode = time.perf_counter() - start
    examples = [e for e in encoded if not isinstance(e, Drop)]
    packer = BinPacker(args.cutoff, window=args.window)
    start = time.perf_counter()
    packs = list(packer.feed(examples))
    t_pack = time.perf_counter() - start
    tokens = sum(len(e.input_ids) for e in examples)
    lengths = [len(e.input_ids) for e in examples]
    result = {
        "machine_note": "shared 2-core machine under load from other jobs; compare ratios, not absolutes",
        "tokenizer": "raymill tiny byte-level BPE (vocab 1024): more tokens per word than real tokenizers",
        "cutoff_len": args.cutoff,
        "examples": len(examples),
        "seed_task_examples": len(seeds),
        "shared_data_present": bool(seeds),
        "drops": len(encoded) - len(examples),
        "truncated": sum(e.truncated for e in examples),
        "length_p50_p90_max": [sorted(lengths)[len(lengths) // 2], sorted(lengths)[int(len(lengths) * 0.9)],
                               max(lengths)],
        "packing_efficiency_bfd": round(packer.efficiency, 4),
        "packs": len(packs),
        "padding_efficiency_longest_in_batch": round(padding_efficiency(lengths, args.pad_batch), 4),
        "pad_batch_size": args.pad_batch,
        "window": args.window,
        "in_process_tokens_per_s": round(tokens / (t_encode + t_pack)),
        "in_process_encode_s": round(t_encode, 3),
        "in_process_pack_s": round(t_pack, 3),
    }

    # 3: tiny-model training step rate on the same packs (flattened, 4 packs per step)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa")
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    step_tokens, start = 0, time.perf_counter()
    steps = 0
    for i in range(0, min(len(packs), 40), 4):
        batch = flatten_collate(packs[i:i + 4])
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
        step_tokens += batch["input_ids"].numel()
        steps += 1
    t_train = time.perf_counter() - start
    result["train_tokens_per_s_tiny_model"] = round(step_tokens / t_train)
    result["data_over_train_ratio_in_process"] = round(result["in_process_tokens_per_s"] / result["train_tokens_per_s_tiny_model"], 1)

    # 2b: the Ray Data path end to end
    if args.ray:
        import ray

        from train.ingest import build_train_dataset

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "sft.jsonl"
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            ds, stats = build_train_dataset("examples", [{"name": "bench", "path": str(path), "format": "sft"}],
                                            str(model_dir), args.cutoff, packing=True, seed=0,
                                            template="chatml", pack_window=args.window)
            start = time.perf_counter()
            seen = 0
            for batch in ds.iter_torch_batches(batch_size=4, collate_fn=flatten_collate):
                seen += batch["input_ids"].numel()
            t_ray = time.perf_counter() - start
            result["ray_tokens"] = seen
            result["ray_data_tokens_per_s_incl_startup"] = round(seen / t_ray)
            result["ray_seconds"] = round(t_ray, 2)
            stats.collect()
            result["ray_stats"] = stats.as_dict()
        ray.shutdown()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
