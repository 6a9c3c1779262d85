"""Dedup benchmark: near-duplicate quality, signature speed, scaling. Writes bench/results/dedup.json.

    python bench/bench_dedup.py [--shared ../shared/data] [--scale-docs 2000] [--skip-ray]

1. Quality: the 90 real articles of shared/data/web plus edited copies (sentence deletions,
   insertions from other articles, reordered paragraphs, boilerplate lines, mixes) of random
   strength. Ground truth: exact Jaccard of the shingle sets of every pair, true when >= 0.8.
   Reported at threshold 0.8: precision/recall of the pairs the algorithm links (verified
   LSH edges), of raw LSH candidates (verify off), and of all pairs inside output clusters
   against the transitive closure of the ground truth (and against direct pairs).
2. Speed on one core: text -> MinHash signatures, ours (vectorised) versus a plain
   datasketch MinHash.update loop over the same shingles (and datasketch's update_batch).
3. Scaling: N and 10N documents through the Ray pipeline (2 CPUs) and the no-Ray path.

Timings are taken on a shared machine under load from other jobs: treat them as rough.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import random
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402

from curate.dedup import DedupConfig, deduplicate_table  # noqa: E402
from curate.dedup.components import components  # noqa: E402
from curate.dedup.features import light_rows  # noqa: E402
from curate.dedup.minhash import VectorMinHasher  # noqa: E402
from curate.dedup.reference import candidate_edges  # noqa: E402
from curate.dedup.text import shingles  # noqa: E402

THRESHOLD = 0.8
BOILERPLATE = [
    "Subscribe to our newsletter for the latest updates.",
    "This site uses cookies to improve your experience. By continuing you accept our cookie policy.",
    "Share this article on Facebook, Twitter and LinkedIn.",
    "Copyright 2019 All rights reserved. Terms of use | Privacy policy | Contact us",
    "Advertisement",
    "Related articles: Read more stories like this one in our archive.",
    "Sign up for free and never miss a story again.",
]
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def load_articles(shared: Path) -> list[str]:
    data = json.loads((shared / "web" / "ground-truth.json").read_text(encoding="utf-8"))
    return [v["articleBody"] for _, v in sorted(data.items()) if len(v["articleBody"].split()) >= 60]


def paragraphs(text: str) -> list[list[str]]:
    """Paragraphs (blank-line or line separated) of sentences."""
    paras = [p for p in re.split(r"\n+", text) if p.strip()]
    return [[s for s in _SENTENCE.split(p.strip()) if s] for p in paras]


def join(paras: list[list[str]]) -> str:
    return "\n\n".join(" ".join(p) for p in paras if p)


def edit(text: str, kind: str, strength: float, pool: list[str], rng: random.Random) -> str:
    """One controlled edit of `text`; `strength` in [0, 1) scales how much changes."""
    paras = paragraphs(text)
    sentences = [(i, j) for i, p in enumerate(paras) for j in range(len(p))]
    if kind == "delete":
        drop = set(rng.sample(sentences, max(1, int(len(sentences) * strength))))
        paras = [[s for j, s in enumerate(p) if (i, j) not in drop] for i, p in enumerate(paras)]
    elif kind == "insert":
        for _ in range(max(1, int(len(sentences) * strength))):
            p = rng.randrange(len(paras))
            paras[p].insert(rng.randint(0, len(paras[p])), rng.choice(pool))
    elif kind == "reorder":
        k = max(2, int(len(paras) * max(strength, 0.2)))
        chosen = rng.sample(range(len(paras)), min(k, len(paras)))
        moved = [paras[i] for i in chosen]
        rng.shuffle(moved)
        for i, p in zip(chosen, moved):
            paras[i] = p
    elif kind == "boilerplate":
        n = max(1, int(8 * strength))
        paras = [[rng.choice(BOILERPLATE)] for _ in range(n)] + paras + [[rng.choice(BOILERPLATE)] for _ in range(n)]
    elif kind == "mix":
        for sub in rng.sample(["delete", "insert", "reorder", "boilerplate"], 2):
            text = edit(text, sub, strength / 2, pool, rng)
        return text
    return join(paras)


def make_corpus(bases: list[str], variants: int, pool: list[str], seed: int, prefix: str) -> dict[str, str]:
    rng = random.Random(seed)
    docs = {}
    for b, base in enumerate(bases):
        docs[f"{prefix}{b:05d}-0"] = base
        for v in range(1, variants + 1):
            kind = rng.choice(["delete", "insert", "reorder", "boilerplate", "mix"])
            docs[f"{prefix}{b:05d}-{v}"] = edit(base, kind, rng.uniform(0.02, 0.4), pool, rng)
    return docs


def pseudo_articles(n: int, pool: list[str], seed: int) -> list[str]:
    """New base documents of 20-40 random real sentences in paragraphs of 3-6: scales the corpus."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sents = rng.sample(pool, rng.randint(20, 40))
        paras, i = [], 0
        while i < len(sents):
            k = rng.randint(3, 6)
            paras.append(sents[i:i + k])
            i += k
        out.append(join(paras))
    return out


def pair_metrics(predicted: set, truth: set) -> dict:
    tp = len(predicted & truth)
    return {"precision": round(tp / len(predicted), 4) if predicted else None,
            "recall": round(tp / len(truth), 4) if truth else None,
            "predicted_pairs": len(predicted), "true_pairs": len(truth), "true_positives": tp}


def cluster_pairs(groups: dict[str, list[str]]) -> set:
    return {tuple(sorted(p)) for members in groups.values() for p in itertools.combinations(members, 2)}


def quality(docs: dict[str, str], config: DedupConfig) -> dict:
    ids = sorted(docs)
    sets = {d: shingles(docs[d], config.ngram, config.cjk_ngram, config.cjk_ratio)[0] for d in ids}
    truth, jaccards = set(), []
    for a, b in itertools.combinations(ids, 2):
        x, y = sets[a], sets[b]
        inter = len(x & y)
        j = inter / (len(x) + len(y) - inter) if x and y else 0.0
        if j >= 0.3:
            jaccards.append(j)
        if j >= config.threshold:
            truth.add((a, b))
    closure = defaultdict(list)
    for node, root in components(sorted(truth)).items():
        closure[root].append(node)
    truth_closure = cluster_pairs(closure)

    table = pa.table({"id": ids, "text": [docs[d] for d in ids]})
    light = light_rows(table, config)
    verified = set(candidate_edges(light, config))
    raw = set(candidate_edges(light, dataclasses.replace(config, verify=False)))
    out = deduplicate_table(table, config)
    clusters = defaultdict(list)
    for r in out.select(["id", "dup_cluster_id"]).to_pylist():
        clusters[r["dup_cluster_id"]].append(r["id"])
    predicted = cluster_pairs(clusters)
    histogram = {f"{lo / 10:.1f}-{(lo + 1) / 10:.1f}": sum(lo / 10 <= j < (lo + 1) / 10 or (lo == 9 and j == 1.0)
                                                            for j in jaccards) for lo in range(3, 10)}
    return {
        "documents": len(ids), "pairs": len(ids) * (len(ids) - 1) // 2,
        "jaccard_histogram_of_pairs_above_0.3": histogram,
        "verified_edges_vs_direct_pairs": pair_metrics(verified, truth),
        "lsh_candidates_unverified_vs_direct_pairs": pair_metrics(raw, truth),
        "cluster_pairs_vs_truth_closure": pair_metrics(predicted, truth_closure),
        "cluster_pairs_vs_direct_pairs": pair_metrics(predicted, truth),
        "kept": sum(r is None for r in out.column("drop_reason").to_pylist()),
    }


def signature_speed(docs: list[str], config: DedupConfig, repeats: int = 3) -> dict:
    from datasketch import MinHash

    def shingle_all():
        return [shingles(t, config.ngram, config.cjk_ngram, config.cjk_ratio)[0] for t in docs]

    hasher = VectorMinHasher(config.num_perm, config.seed)
    sets = shingle_all()
    n_shingles = sum(map(len, sets))

    def ours_full():
        hasher.signatures(shingle_all())

    def ours_hash_only():
        hasher.signatures(sets)

    def datasketch_loop(from_text: bool):
        for s in (shingle_all() if from_text else sets):
            m = MinHash(num_perm=config.num_perm, seed=config.seed)
            for x in s:
                m.update(x)

    def datasketch_batch():
        for s in sets:
            MinHash(num_perm=config.num_perm, seed=config.seed).update_batch(s)

    def best(fn):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    t_ours_full, t_ours = best(ours_full), best(ours_hash_only)
    t_ds_full, t_ds = best(lambda: datasketch_loop(True)), best(lambda: datasketch_loop(False))
    t_ds_batch = best(datasketch_batch)
    n = len(docs)
    return {
        "documents": n, "shingles": n_shingles, "num_perm": config.num_perm, "repeats_best_of": repeats,
        "from_text": {"ours_docs_per_s": round(n / t_ours_full, 1), "datasketch_update_loop_docs_per_s": round(n / t_ds_full, 1),
                      "speedup": round(t_ds_full / t_ours_full, 2)},
        "from_shingles": {"ours_docs_per_s": round(n / t_ours, 1), "datasketch_update_loop_docs_per_s": round(n / t_ds, 1),
                          "datasketch_update_batch_docs_per_s": round(n / t_ds_batch, 1),
                          "speedup_vs_update_loop": round(t_ds / t_ours, 2),
                          "speedup_vs_update_batch": round(t_ds_batch / t_ours, 2)},
    }


def scaling(n_small: int, pool: list[str], config: DedupConfig, use_ray: bool) -> dict:
    result = {}
    corpora = {}
    for factor in (1, 10):
        bases = pseudo_articles(n_small * factor // 4, pool, seed=factor)
        corpora[factor] = make_corpus(bases, 3, pool, seed=factor, prefix=f"s{factor}-")
    for factor, docs in corpora.items():
        table = pa.table({"id": list(docs), "text": list(docs.values())})
        t = time.perf_counter()
        out = deduplicate_table(table, config)
        result[f"reference_{factor}x"] = {"documents": table.num_rows, "seconds": round(time.perf_counter() - t, 2),
                                          "kept": out.column("drop_reason").null_count}
    result["reference_time_ratio_10x"] = round(result["reference_10x"]["seconds"] / result["reference_1x"]["seconds"], 2)
    if use_ray:
        import ray

        from curate.dedup.distributed import deduplicate

        if not ray.is_initialized():
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ray.data.from_items([{"x": 1}]).materialize()  # start workers before timing
        for factor, docs in corpora.items():
            table = pa.table({"id": list(docs), "text": list(docs.values())})
            blocks = max(2, table.num_rows // 500)
            ds = ray.data.from_arrow([table.slice(i, -(-table.num_rows // blocks))
                                      for i in range(0, table.num_rows, -(-table.num_rows // blocks))])
            t = time.perf_counter()
            rows = deduplicate(ds, config).materialize()
            seconds = time.perf_counter() - t
            kept = sum(b.column("drop_reason").null_count for b in rows.iter_batches(batch_format="pyarrow"))
            result[f"ray_{factor}x"] = {"documents": table.num_rows, "input_blocks": blocks,
                                        "seconds": round(seconds, 2), "kept": kept}
        result["ray_time_ratio_10x"] = round(result["ray_10x"]["seconds"] / result["ray_1x"]["seconds"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--variants", type=int, default=5, help="edited copies per article")
    parser.add_argument("--scale-docs", type=int, default=2000, help="documents of the 1x scaling corpus")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "dedup.json"))
    args = parser.parse_args()

    articles = load_articles(Path(args.shared))
    pool = [s for a in articles for p in paragraphs(a) for s in p if len(s.split()) >= 5]
    config = DedupConfig(threshold=THRESHOLD)
    started = time.time()
    docs = make_corpus(articles, args.variants, pool, seed=0, prefix="a")
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": os.getloadavg(),
                    "note": "shared 2-core machine under load from other jobs; timings are rough"},
        "config": config.as_dict(),
        "quality": quality(docs, config),
        "auto_params_quality": None,
        "signature_speed": signature_speed(list(docs.values()), config),
    }
    auto = DedupConfig(threshold=THRESHOLD, bands=None, rows=None)
    report["auto_params_quality"] = {"lsh_params": list(auto.lsh_params), **quality(docs, auto)}
    report["scaling"] = scaling(args.scale_docs, pool, config, not args.skip_ray)
    report["seconds_total"] = round(time.time() - started, 1)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
