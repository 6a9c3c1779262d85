"""Benchmark: perplexity scoring speed (batched vs one document per call) and what the
default-on model stages cost the whole curate job.

    python bench/bench_perplexity.py [--shared ../shared/data] [--out bench/results/perplexity.json]

1. Documents/s on one core (torch threads = 1) for the embedded reference LM scoring
   sample-crawl-style paragraphs in seven languages, the head of each document
   (perplexity.max_tokens = 256, as the default job): `batch_size: 16` windows per forward
   pass vs one document per call. Best of three rounds each (the machine is shared).
2. The curate job on the embedded sample crawl on local Ray (2 CPUs), pages/s (rows in /
   wall seconds), with the default config and with the perplexity, quality and
   ppl_bucket stages switched off. Each configuration runs twice after a warm-up run;
   the faster run counts.
3. With ../shared/data: how many web / web_zh pages the perplexity stage would drop
   (`ppl_unmappable`); the rules do not use the model labels by default, so
   bench_curate_zh.py's kept counts stand.
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

MODEL_STAGES = ("perplexity", "quality", "ppl_bucket")


def scoring_speed(rounds: int = 3, n_docs: int = 112) -> dict:
    import torch

    from curate.perplexity import PerplexityConfig, PerplexityStage
    from curate.reference_lm import reference_lm_path
    from curate.sample_crawl import LANGS, paragraphs

    torch.set_num_threads(1)
    rng = random.Random(42)
    docs = ["\n\n".join(paragraphs(rng, LANGS[i % len(LANGS)], rng.randint(1, 4))) for i in range(n_docs)]
    path = str(reference_lm_path())
    batched = PerplexityStage(PerplexityConfig(model_path=path, batch_size=16))
    single = PerplexityStage(PerplexityConfig(model_path=path, batch_size=1))

    def best(fn) -> float:
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return n_docs / min(times)

    batched.score(docs[:8])
    batched_rate = best(lambda: batched.score(docs))
    single_rate = best(lambda: [single.score([d]) for d in docs])
    tokens = sum(min(256, len(batched.tokenizer(d)["input_ids"])) for d in docs)
    return {"docs": n_docs, "mean_scored_tokens": round(tokens / n_docs, 1), "batched_docs_per_s": round(batched_rate, 1),
            "one_per_call_docs_per_s": round(single_rate, 1), "speedup": round(batched_rate / single_rate, 2)}


def curate_cost(runs: int = 2) -> dict:
    import ray

    from curate.config import merge_config, parse_config
    from curate.pipeline import prepare_embedded_ray, run_curate
    from curate.sample_crawl import ensure_sample_crawl
    from curate.reference_lm import default_cache_dir

    crawl = ensure_sample_crawl(default_cache_dir())
    prepare_embedded_ray(2)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    configs = {"default": {}, "without_model_stages": {k: {"enabled": False} for k in MODEL_STAGES}}
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        run_curate(parse_config(merge_config({})), [str(crawl)], Path(tmp) / "warm", write_card=False)
        for name, overrides in configs.items():
            walls, summary = [], None
            for i in range(runs):
                summary = run_curate(parse_config(merge_config(overrides)), [str(crawl)], Path(tmp) / f"{name}{i}",
                                     write_card=False)
                walls.append(summary["wall_seconds"])
            out[name] = {"pages": summary["rows_in"], "kept": summary["kept"], "wall_seconds": min(walls),
                         "pages_per_s": round(summary["rows_in"] / min(walls), 1)}
    ray.shutdown()
    out["cost_of_model_stages"] = round(1 - out["default"]["pages_per_s"] / out["without_model_stages"]["pages_per_s"], 3)
    return out


def shared_unmappable(shared: Path) -> dict | None:
    if not shared.is_dir():
        return None
    import pyarrow as pa

    from bench.bench_curate_zh import load_pages
    from curate.extract import ExtractStage
    from curate.perplexity import PerplexityConfig, PerplexityStage
    from curate.reference_lm import reference_lm_path

    stage = PerplexityStage(PerplexityConfig(model_path=str(reference_lm_path())))
    extract = ExtractStage({})
    result = {}
    for name in ("web", "web_zh"):
        pages = load_pages(shared, name)
        table = extract(pa.table({"id": [p["id"] for p in pages], "url": [p["url"] for p in pages],
                                  "raw": [p["raw"] for p in pages]}))
        scored = stage(table)
        status = scored.column("ppl_status").to_pylist()
        result[name] = {"pages": len(pages), "ppl_unmappable": status.count("unmappable"),
                        "median_ppl": sorted(v for v in scored.column("ppl").to_pylist() if v is not None)[len(pages) // 2]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "perplexity.json")
    args = parser.parse_args()
    report = {"load_before": os.getloadavg(), "scoring": scoring_speed()}
    print("scoring", json.dumps(report["scoring"]), flush=True)
    report["shared"] = shared_unmappable(args.shared)
    print("shared", json.dumps(report["shared"]), flush=True)
    report["curate"] = curate_cost()
    print("curate", json.dumps(report["curate"]), flush=True)
    report["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
