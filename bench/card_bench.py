"""Time write_card on a synthetic document dataset and record peak memory (run on demand).

    python bench/card_bench.py [rows]   -> bench/results/card.json

Timings on the shared development machine are taken under load from other jobs.
"""
from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.card import write_card  # noqa: E402
from schemas.dataset_io import atomic_output_dir, write_parquet  # noqa: E402
from schemas.funnel import StageCount  # noqa: E402


def synthetic(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    words = np.array("the quick brown fox jumps over a lazy dog while seven wizards judge".split())
    lengths = rng.integers(20, 400, n)
    text = [" ".join(words[rng.integers(0, len(words), k)]) for k in lengths]
    return pa.table({
        "id": [f"d{seed}-{i}" for i in range(n)], "text": text,
        "lang": rng.choice(["en", "de", "fr", "zh"], n), "lang_score": rng.random(n),
        "gopher_word_count": lengths, "perplexity": rng.lognormal(5, 0.6, n),
        "dup_cluster_size": rng.integers(1, 50, n),
    })


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    files = 8
    with tempfile.TemporaryDirectory() as tmp:
        ds = Path(tmp) / "ds"
        with atomic_output_dir(ds) as out:
            for i in range(files):
                write_parquet(synthetic(rows // files, i), out / "data", "document", f"part-{i:05d}.parquet")
        data_bytes = sum(f.stat().st_size for f in (ds / "data").glob("*.parquet"))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        write_card(ds, "document", funnel=[StageCount("read", rows // files * files, rows // files * files)])
        seconds = time.perf_counter() - start
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"rows": rows // files * files, "files": files, "parquet_mb": round(data_bytes / 2**20, 1),
              "write_card_seconds": round(seconds, 2), "rows_per_second": round(rows / seconds),
              "peak_rss_mb_before": round(rss_before / 1024), "peak_rss_mb_after": round(rss_after / 1024),
              "note": "shared 2-core machine, timings under load from other jobs"}
    out_path = Path(__file__).resolve().parent / "results" / "card.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
