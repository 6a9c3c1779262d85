"""Which source documents went into which packed training sequences.

The lineage table has one row per packed sequence, in the order the trainer reads them:
row i of the token cache's train split is sequence i (what `cached_rows` and Ray Data's
cached read hand out). Each row lists the pieces of source documents it holds:

    sequence     int64          index of the packed sequence
    doc_ids      list<string>   source id of each piece (the record's own `id`: a curated
                                document's doc_id; else "<dataset>-<row index>")
    starts       list<int32>    first position of each piece in the sequence
    lengths      list<int32>    tokens of each piece
    doc_offsets  list<int32>    first token of each piece in its document (> 0: the rest of
                                a document a pretraining block boundary cut)

It is written by the same pass as the token cache (train.token_cache keeps it as the cache's
`lineage/` split) and linked into the run's `train_data/lineage/` beside the training card,
so a rerun that tokenizes nothing still has it. Nothing in training reads it.

Source ids: a record's own `id` when it has one, else the dataset name and the row's index
in the dataset's sorted files (train.formats.convert_row). A row index is cheap, unique
within a dataset and points straight back at the record; it stays stable across reruns for
as long as the files are unchanged, which is also what keeps the token cache valid. A
content hash would survive a reordered file, but it would give two copies of a text one id
and could not be looked up without hashing the whole dataset again.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from train.packing import Span

LINEAGE_DIR = "lineage"
TRAIN_DATA_DIR = "train_data"  # the run directory's training card (train.data_card)
_INT_LIST = pa.list_(pa.int32())
SPANS_SCHEMA = pa.schema([("doc_ids", pa.list_(pa.string())), ("starts", _INT_LIST), ("lengths", _INT_LIST),
                          ("doc_offsets", _INT_LIST)])
LINEAGE_SCHEMA = pa.schema([("sequence", pa.int64()), *SPANS_SCHEMA])


def spans_table(span_lists: Sequence[Sequence[Span]]) -> pa.Table:
    """One row per packed sequence of a batch (no sequence numbers yet: see `numbered`)."""
    counts = np.fromiter((len(s) for s in span_lists), np.int32, len(span_lists))
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts, dtype=np.int32)]), pa.int32())
    pieces = [p for spans in span_lists for p in spans]

    def column(values, kind) -> pa.ListArray:
        return pa.ListArray.from_arrays(offsets, pa.array(values, kind))

    return pa.Table.from_arrays([column([p.doc_id for p in pieces], pa.string()),
                                 column([p.start for p in pieces], pa.int32()),
                                 column([p.length for p in pieces], pa.int32()),
                                 column([p.doc_offset for p in pieces], pa.int32())], schema=SPANS_SCHEMA)


def numbered(table: pa.Table, first: int) -> pa.Table:
    """A batch's spans table with the sequence numbers first, first+1, ..."""
    sequence = pa.array(np.arange(first, first + table.num_rows, dtype=np.int64))
    return pa.Table.from_arrays([sequence, *table.select(SPANS_SCHEMA.names).columns], schema=LINEAGE_SCHEMA)


# ---------------------------------------------------------------- into the run directory
def _link_or_copy(source: Path, target: Path) -> None:
    """Cache files are never rewritten in place (a new pass is a new directory), so a hard
    link is safe and costs nothing; another filesystem gets a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def write_lineage(target: Path, stats: Any) -> int | None:
    """Put the lineage of `stats` (DataStats) into `target`: the token cache's files linked,
    or a stream's lineage pass written. Returns its sequences, or None where the stats have
    no lineage (a stage without packed sequences)."""
    files = stats.lineage_files() if hasattr(stats, "lineage_files") else None
    if files:
        target.mkdir(parents=True, exist_ok=True)
        for path in files:
            _link_or_copy(Path(path), target / Path(path).name)
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    tables = stats.lineage_tables() if files is None and hasattr(stats, "lineage_tables") else None
    if tables is None:
        return None
    target.mkdir(parents=True, exist_ok=True)
    rows = 0
    with pq.ParquetWriter(target / "part-00000.parquet", LINEAGE_SCHEMA) as writer:
        for table in tables:
            writer.write_table(numbered(table, rows))
            rows += table.num_rows
    return rows


# ---------------------------------------------------------------- reading it back: --trace
def lineage_root(run_dir: str | Path) -> Path:
    """The training card directory of a run directory (or that directory itself)."""
    root = Path(run_dir)
    return root if (root / LINEAGE_DIR).is_dir() else root / TRAIN_DATA_DIR


def is_training_run(path: str | Path) -> bool:
    return (lineage_root(path) / LINEAGE_DIR).is_dir()


def find_pieces(lineage_dir: Path, doc_id: str) -> Iterator[dict]:
    """Every piece of `doc_id` in the lineage table, in sequence order, read a batch at a time."""
    for path in sorted(lineage_dir.glob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=8192):
            doc_ids = batch.column("doc_ids")
            hits = np.flatnonzero(pc.equal(pc.list_flatten(doc_ids), doc_id).to_numpy(zero_copy_only=False))
            if not len(hits):
                continue
            parents = pc.list_parent_indices(doc_ids).to_numpy()
            flat = {name: pc.list_flatten(batch.column(name)).to_numpy() for name in ("starts", "lengths", "doc_offsets")}
            sequences = batch.column("sequence").to_numpy()
            for at in hits:
                yield {"sequence": int(sequences[parents[at]]), "start": int(flat["starts"][at]),
                       "length": int(flat["lengths"][at]), "doc_offset": int(flat["doc_offsets"][at])}


def _card_row(root: Path, doc_id: str) -> tuple[dict | None, bool]:
    for split, kept in (("data", True), ("dropped", False)):
        for path in sorted((root / split).glob("*.parquet")):
            rows = pq.read_table(path, filters=[("id", "=", doc_id)]).to_pylist()
            if rows:
                return rows[0], kept
    return None, False


def trace_training(run_dir: str | Path, doc_id: str) -> dict[str, Any]:
    """Where `doc_id` went in a training run: its card row (tokens, or the training-time drop
    reason), its dataset and that dataset's path, and each packed sequence holding a piece."""
    from schemas.funnel import read_accounting

    root = lineage_root(run_dir)
    row, kept = _card_row(root, doc_id)
    pieces = list(find_pieces(root / LINEAGE_DIR, doc_id))
    if row is None and not pieces:
        raise KeyError(f"document {doc_id!r} is not in the training run {root}")
    _, run = read_accounting(root)
    lineage = run.get("lineage") or {}
    source = (row or {}).get("source")
    return {"doc_id": doc_id, "run": str(root.parent), "stage": (run.get("config") or {}).get("stage"),
            "source": source, "source_path": (lineage.get("sources") or {}).get(source), "kept": kept,
            "tokens": (row or {}).get("tokens"), "truncated": (row or {}).get("truncated"),
            "drop_reason": (row or {}).get("drop_reason"), "drop_detail": (row or {}).get("drop_detail"),
            "pieces": pieces}


def format_training_trace(result: dict[str, Any]) -> str:
    """The training trace for people, one fact per line."""
    source = result["source"] or "?"
    if result["source_path"]:
        source += f" ({result['source_path']})"
    lines = [f"doc_id    {result['doc_id']}", f"training  {result['run']} (stage {result['stage']})",
             f"dataset   {source}"]
    pieces = result["pieces"]
    if result["drop_reason"]:
        lines.append(f"outcome   dropped before packing: {result['drop_reason']}"
                     + (f" ({result['drop_detail']})" if result["drop_detail"] else ""))
    else:
        cut = ", truncated to the cutoff" if result["truncated"] else ""
        lines.append(f"outcome   trained: {sum(p['length'] for p in pieces)} tokens in {len(pieces)} packed "
                     f"sequence{'s' if len(pieces) != 1 else ''}{cut}")
    if pieces:
        lines.append("sequences")
    for p in pieces:
        end, doc_end = p["start"] + p["length"], p["doc_offset"] + p["length"]
        lines.append(f"  {p['sequence']:>8}  tokens [{p['start']}, {end}) = document tokens [{p['doc_offset']}, {doc_end})")
    return "\n".join(lines)


def lineage_summary(stats: Any, sequences: int, sources: dict[str, str]) -> dict[str, Any]:
    """What the training card records about the lineage table."""
    return {"table": f"{LINEAGE_DIR}/", "sequences": sequences, "documents": int(getattr(stats, "examples", 0)),
            "split_documents": int(getattr(stats, "split_documents", 0)), "sources": sources}


def check_sequences(sequences: int, stats: Any) -> None:
    expected = getattr(stats, "sequences", None)
    if expected is not None and sequences != expected:
        raise RuntimeError(f"lineage table has {sequences} sequences, the data stats {expected}")


def iter_lineage(root: str | Path) -> Iterable[dict]:
    """Every row of a run's lineage table as a dict (tests, small runs)."""
    for path in sorted((lineage_root(root) / LINEAGE_DIR).glob("*.parquet")):
        yield from pq.read_table(path).to_pylist()
