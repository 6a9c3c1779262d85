"""Benchmark: perplexity scoring speed (batched vs one document per call) and what the
default-on model stages cost the whole curate job.

    python bench/bench_perplexity.py [--shared ../shared/data] [--out bench/results/perplexity.json]

1. Documents/s on one core (torch threads = 1, tokenizer not parallel) for the embedded
   reference LM scoring sample-crawl-style paragraphs in seven languages, the head of each
   document (perplexity.max_tokens = 256, as the default job): `batch_size: 16` (the default,
   with its CPU budget of 1024 padded tokens per pass), 4, 64 and 16 without a token budget,
   vs one document per call; with ../shared also on the real article texts of web and
   web_zh (longer than the scored head). Best of five interleaved rounds (the machine is
   shared); the batched perplexities are checked against the one-per-call ones.
2. The curate job on the embedded sample crawl on local Ray (2 CPUs), pages/s (rows in /
   wall seconds), with the default config, with ppl_bucket on as well (its barrier: every
   scored row before any is labelled) and with the perplexity, quality and ppl_bucket
   stages switched off. Each configuration runs twice after a warm-up run;
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
# Per core: the tokenizer's batch call must not spread over the other core (the actors set the same).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

MODEL_STAGES = ("perplexity", "quality", "ppl_bucket")


def _rate(stages: dict, docs: list[str], rounds: int, one_per_call: set[str]) -> dict[str, float]:
    """Documents/s per configuration, best of `rounds`; the rounds interleave the
    configurations, so a busy spell on the shared machine hits all of them alike."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, stage in stages.items():
            start = time.perf_counter()
            if name in one_per_call:
                for doc in docs:
                    stage.score([doc])
            else:
                stage.score(docs)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    return {name: round(len(docs) / seconds, 1) for name, seconds in best.items()}


def _max_rel_diff(a: list, b: list) -> float:
    return max((abs(x - y) / abs(y) for x, y in zip(a, b) if x is not None and y is not None), default=0.0)


def scoring_speed(shared: Path, rounds: int = 5, n_docs: int = 112) -> dict:
    """Batched vs one document per call, on sample-crawl paragraphs and (with ../shared)
    on real article texts, which are longer than the scored head."""
    import torch

    from curate.perplexity import PerplexityConfig, PerplexityStage
    from curate.reference_lm import reference_lm_path
    from curate.sample_crawl import LANGS, paragraphs

    torch.set_num_threads(1)
    rng = random.Random(42)
    docs = ["\n\n".join(paragraphs(rng, LANGS[i % len(LANGS)], rng.randint(1, 4))) for i in range(n_docs)]
    path = str(reference_lm_path())

    def stage(**options) -> PerplexityStage:
        return PerplexityStage(PerplexityConfig(model_path=path, **options))

    stages = {"one_per_call": stage(batch_size=1), "batch_16": stage(batch_size=16),
              "batch_4": stage(batch_size=4), "batch_64": stage(batch_size=64),
              "batch_16_no_token_cap": stage(batch_size=16, batch_tokens=1 << 30)}
    for s in stages.values():
        s.score(docs[:8])  # warm-up
    rates = _rate(stages, docs, rounds, {"one_per_call"})
    exact = [stages["one_per_call"].score([d])[0][0] for d in docs]
    tokens = [len(t) for t in stages["batch_16"].tokenizer(docs, add_special_tokens=False)["input_ids"]]
    out = {"docs": n_docs, "mean_scored_tokens": round(sum(min(256, n) for n in tokens) / n_docs, 1),
           "docs_per_s": rates, "speedup": round(rates["batch_16"] / rates["one_per_call"], 2),
           "max_rel_diff_batched_vs_single": _max_rel_diff(stages["batch_16"].score(docs)[0], exact),
           "batch_tokens_default": stages["batch_16"].batch_tokens}
    if shared.is_dir():  # real article texts: ~3k characters median, tokenized only as far as scored
        pages = []
        for name in ("web", "web_zh"):
            truth = json.loads((shared / name / "ground-truth.json").read_text(encoding="utf-8"))
            pages += [v["articleBody"] for v in truth.values() if v.get("articleBody")]
        real = _rate({"one_per_call": stages["one_per_call"], "batch_16": stages["batch_16"]}, pages, rounds,
                     {"one_per_call"})
        exact = [stages["one_per_call"].score([p])[0][0] for p in pages]
        out["articles"] = {"docs": len(pages), "median_chars": sorted(map(len, pages))[len(pages) // 2],
                           "docs_per_s": real, "speedup": round(real["batch_16"] / real["one_per_call"], 2),
                           "max_rel_diff_batched_vs_single": _max_rel_diff(stages["batch_16"].score(pages)[0], exact)}
    return out


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
    configs = {"default": {}, "with_ppl_bucket": {"ppl_bucket": {"enabled": True}},
               "without_model_stages": {k: {"enabled": False} for k in MODEL_STAGES}}
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
    report = {"load_before": os.getloadavg(), "scoring": scoring_speed(args.shared)}
    report["load_after_scoring"] = os.getloadavg()
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
