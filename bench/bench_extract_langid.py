"""Benchmark: extraction quality and language-ID accuracy on ../shared/data, with the
settings the pipeline uses by default (read from curate/default_config.yaml) and a few
alternatives for comparison.

    python bench/bench_extract_langid.py [--shared ../shared/data]

Writes bench/results/extract_langid.json. Extraction speed here is the ExtractStage alone
in this process (one core); throughput of the whole pipeline on Ray Data versus bare
library calls is bench/bench_curate_throughput.py.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curate.config import default_config  # noqa: E402
from curate.extract import ExtractStage  # noqa: E402
from curate.extract_quality import token_f1  # noqa: E402
from curate.langid import LangIdStage  # noqa: E402

import pyarrow as pa  # noqa: E402


def load_web(shared: Path) -> list[tuple[str, str, bytes, str]]:
    web = shared / "web"
    truth = json.loads((web / "ground-truth.json").read_text(encoding="utf-8"))
    return [(k, truth[k]["url"], gzip.decompress((web / "html" / f"{k}.html.gz").read_bytes()), truth[k]["articleBody"])
            for k in sorted(truth)]


def extraction_quality(pages, settings: dict) -> dict:
    stage = ExtractStage(settings)
    table = pa.table({"id": [p[0] for p in pages], "url": [p[1] for p in pages],
                      "raw": pa.array([p[2] for p in pages], pa.binary()), "source": ["bench"] * len(pages)})
    start = time.perf_counter()
    out = stage(table).to_pylist()
    seconds = time.perf_counter() - start
    scores = [token_f1(r["text"], p[3]) for r, p in zip(out, pages)]
    return {"settings": settings, "pages": len(pages), "mean_token_f1": round(statistics.mean(scores), 4),
            "median_token_f1": round(statistics.median(scores), 4),
            "pages_below_0.8": sum(s < 0.8 for s in scores), "dropped": sum(r["drop_reason"] is not None for r in out),
            "pages_per_s": round(len(pages) / seconds, 1)}


def langid_accuracy(shared: Path, settings: dict) -> dict:
    stage = LangIdStage(settings)
    per_lang, total_ok, total = {}, 0, 0
    start = time.perf_counter()
    for f in sorted((shared / "langid").glob("*.txt")):
        lines = [ln for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
        pred, _ = stage.predict(lines)
        ok = sum(p == f.stem for p in pred)
        per_lang[f.stem] = round(ok / len(lines), 4)
        total_ok += ok
        total += len(lines)
    seconds = time.perf_counter() - start
    return {"settings": settings, "sentences": total, "languages": len(per_lang), "accuracy": round(total_ok / total, 4),
            "per_language": per_lang, "sentences_per_s": round(total / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "extract_langid.json")
    args = parser.parse_args()
    if not (args.shared / "web").is_dir():
        sys.exit(f"needs {args.shared}/web and {args.shared}/langid (the shared data directory)")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load_before = os.getloadavg()
    pages = load_web(args.shared)

    defaults = default_config()
    pipeline_extract = {k: v for k, v in defaults["extract"].items() if k != "enabled"}
    settings = {"pipeline_default": pipeline_extract,
                "precision": {"favor_precision": True, "fast": False},
                "precision_fast": {"favor_precision": True, "fast": True},
                "trafilatura_default": {"favor_precision": False, "fast": False},
                "trafilatura_fast": {"favor_precision": False, "fast": True}}
    quality = {}
    for name, s in settings.items():
        quality[name] = extraction_quality(pages, s)
        print(name, quality[name], flush=True)
    lid = langid_accuracy(args.shared, {k: v for k, v in defaults["langid"].items() if k != "enabled"})
    print("langid", {k: v for k, v in lid.items() if k != "per_language"}, flush=True)

    result = {
        "benchmark": "extract_langid",
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1_5_15_before": [round(x, 1) for x in load_before],
                    "load_average_1_5_15_after": [round(x, 1) for x in os.getloadavg()],
                    "note": "shared development machine (2 cores, other jobs running): timings are under load"},
        "extraction": quality,
        "langid": lid,
        "targets": {"mean_token_f1": 0.95, "langid_accuracy": 0.98},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
