"""Tokenize once: the packed training rows, the card rows and the data stats from one pass,
cached on disk under a fingerprint of everything that decides them.

    <cache>/<fingerprint>/train/part-*.parquet   packed sequences, in stream order
                         /card/part-*.parquet    one row per input record (tokens or drop reason)
                         /lineage/part-*.parquet one row per packed sequence: its records' ids and
                                                 token spans (train.lineage)
                         /stats.json             DataStats counters
                         /_SUCCESS               written last (an interrupted pass is never reused)

A second run with the same data files (path, size, mtime), tokenizer files, template,
cutoff, packing, seed and options reads the cache and tokenizes nothing; the stats and
the data card come from the same pass that produced the rows, so nothing is tokenized
twice. Tokenizing before training, rather than streaming beside it, also keeps a CPU
node's cores for the trainer (on CPU the two compete for the same cores).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.dataset_io import SUCCESS_MARKER, atomic_output_dir

log = logging.getLogger(__name__)

# Bump when the packed-row format or the tokenization changes meaning: old caches are ignored.
CACHE_FORMAT = 2  # 2: the lineage split
ROWS_PER_FILE = 256  # several files, so Ray Data can split the rows between training workers
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json")


def _file_identity(path: Path) -> list:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def tokenizer_digest(tokenizer_path: str) -> str:
    """A hash of the tokenizer's own files (a hub id without local files hashes its name)."""
    root = Path(tokenizer_path)
    digest = hashlib.sha256(str(tokenizer_path).encode())
    if root.is_dir():
        for name in TOKENIZER_FILES:
            if (root / name).is_file():
                digest.update(name.encode() + b"\0" + (root / name).read_bytes())
    return digest.hexdigest()


def fingerprint(data_files: Iterable[Path], tokenizer_path: str, settings: dict[str, Any]) -> str:
    """Key of a tokenized dataset: data files, tokenizer files and every setting that changes a row."""
    payload = {"format": CACHE_FORMAT, "files": [_file_identity(Path(p)) for p in data_files],
               "tokenizer": tokenizer_digest(tokenizer_path), "settings": settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


class _RollingParquet:
    """Appends tables to part-00000.parquet, part-00001.parquet, ... of `rows_per_file` rows each."""

    def __init__(self, directory: Path, rows_per_file: int):
        self.directory, self.rows_per_file = directory, rows_per_file
        self.directory.mkdir(parents=True, exist_ok=True)
        self.files, self.writer, self.in_file, self.schema = 0, None, 0, None

    def write(self, table: pa.Table) -> None:
        if self.schema is None:
            self.schema = table.schema
        while table.num_rows:
            if self.writer is None:
                self.writer = pq.ParquetWriter(self.directory / f"part-{self.files:05d}.parquet", self.schema)
                self.files += 1
            take = min(table.num_rows, self.rows_per_file - self.in_file)
            self.writer.write_table(table.slice(0, take).cast(self.schema))
            table, self.in_file = table.slice(take), self.in_file + take
            if self.in_file >= self.rows_per_file:
                self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer, self.in_file = None, 0

    def finish(self, empty_schema: pa.Schema) -> None:
        self.close()
        if self.files == 0:  # an empty split still gets one (empty) file with the right columns
            pq.write_table(empty_schema.empty_table(), self.directory / "part-00000.parquet")


def write_cache(target: Path, batches: Iterable[dict], train_schema: pa.Schema, card_schema: pa.Schema) -> dict:
    """Consume the one pass (per batch: Arrow IPC bytes of the packed rows, of the card rows
    and of the rows' lineage, and the stats JSON) into `target` atomically; returns the
    summed stats. The lineage rows get their sequence numbers here, where the packed rows
    get their place in the cache: row i of train/ is sequence i."""
    from collections import Counter

    from train.lineage import LINEAGE_SCHEMA, numbered

    totals: Counter = Counter()
    drops: Counter = Counter()
    started = time.perf_counter()
    with atomic_output_dir(target) as tmp:
        train = _RollingParquet(tmp / "train", ROWS_PER_FILE)
        card = _RollingParquet(tmp / "card", 64 * ROWS_PER_FILE)
        lineage = _RollingParquet(tmp / "lineage", 64 * ROWS_PER_FILE)
        sequences = 0
        for batch in batches:
            for rows_ipc, card_ipc, lineage_ipc, stats_json in zip(batch["train"], batch["card"], batch["lineage"],
                                                                   batch["stats"]):
                rows = pa.ipc.open_stream(bytes(rows_ipc)).read_all()
                spans = pa.ipc.open_stream(bytes(lineage_ipc)).read_all()
                if spans.num_rows != rows.num_rows:
                    raise RuntimeError(f"a batch of {rows.num_rows} packed rows came with {spans.num_rows} lineage rows")
                train.write(rows)
                lineage.write(numbered(spans, sequences))
                sequences += rows.num_rows
                card.write(pa.ipc.open_stream(bytes(card_ipc)).read_all())
                stats = json.loads(stats_json)
                drops.update(stats.pop("drops"))
                totals.update(stats)
        train.finish(train_schema)
        card.finish(card_schema)
        lineage.finish(LINEAGE_SCHEMA)
        summary = {**{k: int(v) for k, v in totals.items()}, "drops": dict(sorted(drops.items())),
                   "tokenize_seconds": round(time.perf_counter() - started, 3)}
        (tmp / "stats.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def read_stats(target: Path) -> dict:
    return json.loads((target / "stats.json").read_text(encoding="utf-8"))


def is_cached(target: Path) -> bool:
    return (target / SUCCESS_MARKER).exists()


def parquet_files(target: Path, split: str) -> list[str]:
    return sorted(str(p) for p in (target / split).glob("*.parquet"))


def default_cache_root(run_dir: str | Path) -> Path:
    """Embedded Ray: the user cache (a rerun in another run dir reuses it). On a cluster
    (RAY_ADDRESS set) the run directory, which every node must see anyway."""
    if os.environ.get("RAY_ADDRESS"):
        return Path(run_dir).expanduser().resolve() / "tokenized"
    from train.tiny import default_cache_dir

    return Path(default_cache_dir()) / "tokenized"


def cache_target(setting: str, default_root: str | Path | None, data_files: Iterable[Path], tokenizer_path: str,
                 settings: dict[str, Any], prefix: str = "") -> Path | None:
    """Where a tokenized pass is cached, from a stage's `tokenized_cache` option: None for
    "off" (and for "auto" without a default root), else `prefix` + the key's fingerprint
    under the default root ("auto") or under the directory the option names."""
    if setting == "off" or (setting == "auto" and default_root is None):
        return None
    root = Path(default_root if setting == "auto" else setting).expanduser()
    return root / (prefix + fingerprint(data_files, tokenizer_path, settings))


def cached_table(target: Path, compute: Callable[[], pa.Table], name: str) -> tuple[pa.Table, bool]:
    """(table, reused): a tokenized set small enough to be one table (preference pairs), read
    from a finished cache entry or computed and written into it atomically."""
    if is_cached(target):
        log.info("tokenized data from the cache %s (no tokenization)", target)
        return pq.read_table(target / name), True
    table = compute()
    with atomic_output_dir(target) as tmp:
        pq.write_table(table, tmp / name)
    return table, False


def cached_pass(target: Path, run_pass: Callable[[], Iterable[dict]], train_schema: pa.Schema,
                card_schema: pa.Schema) -> tuple[dict, bool]:
    """(stats, reused): read a finished cache, or run the pass into it."""
    if is_cached(target):
        log.info("tokenized data from the cache %s (no tokenization)", target)
        return read_stats(target), True
    return write_cache(target, run_pass(), train_schema, card_schema), False
