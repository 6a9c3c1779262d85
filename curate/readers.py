"""Streaming readers: input files -> pyarrow Tables, one bounded batch at a time.

Two families, because they produce two record kinds:

* raw pages (`raw_page` kind, plus `drop_reason`/`drop_stage`): WARC / WARC.gz and
  `.html` / `.html.gz` files. These go through URL filter -> extraction.
* documents (`document` kind, plus drop columns): JSONL and Parquet files with a
  `text` field. These skip extraction.

Accounting contract: every input record becomes exactly one row. Records we do not
process (WARC requests, revisits, metadata, non-HTML payloads, non-2xx responses,
JSONL lines that are not JSON ...) are rows already marked dropped by the `read`
stage, with their payload emptied so they cost almost no memory. A corrupt tail of a
file (truncated gzip, garbage where a WARC record should start) becomes one dropped
row with reason `corrupt_warc` / `corrupt_gzip` naming the file and offset, after
every record that could be read. A file that cannot be opened at all raises
`InputError` naming the file.

WARC library: warcio, not fastwarc. warcio is pure Python and already a dependency
(no compiled wheel to chase), it decodes chunked and gzip/deflate/br HTTP bodies for
us, and reading is not the bottleneck: a 177 KB news page costs ~1.2 ms to read from a
WARC.gz (a third of it zlib, which fastwarc would pay too) against ~17 ms to extract it
(bench/bench_curate_throughput.py: reader + stages in a loop run as fast as the bare
library calls, so fastwarc's C++ parser would not move pipeline throughput).

Ray Data entry points (`read_raw`, `read_documents`) distribute over FILES: one read
task per file, each streaming its batches, so no process ever holds a whole input.
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from curate.stage import DROP_REASON, DROP_STAGE
from schemas.records import DOCUMENT, RAW_PAGE
from schemas.options import from_mapping

READ_STAGE = "read"
DEFAULT_BATCH_ROWS = 256
# Raw pages average ~100-300 KB: 256 of them held as Python bytes plus their Arrow copy
# took a read task to ~350 MB. A byte bound keeps a reader's memory flat whatever the pages.
DEFAULT_BATCH_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_RAW_BYTES = 5 * 1024 * 1024

HTML_CONTENT_TYPES = ("text/html", "application/xhtml+xml")
WARC_SUFFIXES = (".warc", ".warc.gz")
HTML_SUFFIXES = (".html", ".htm", ".html.gz", ".htm.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)

_DROP_FIELDS = [
    pa.field(DROP_REASON, pa.string(), nullable=True, metadata={"doc": "Name of the first rule that dropped the row."}),
    pa.field(DROP_STAGE, pa.string(), nullable=True, metadata={"doc": "Stage that dropped the row."}),
    pa.field("read_error", pa.string(), nullable=True,
             metadata={"doc": "For corrupt-input drops: file, offset and the parser's error."}),
]
RAW_SCHEMA = pa.schema(list(RAW_PAGE.schema) + _DROP_FIELDS, metadata=RAW_PAGE.schema.metadata)
DOCUMENT_READ_SCHEMA = pa.schema(
    [DOCUMENT.field(n) for n in ("id", "text", "url", "source", "raw_id", "fetch_time")] + _DROP_FIELDS
    + [pa.field("charset_used", pa.string(), nullable=True,
                metadata={"doc": "'utf-8-replace' when invalid UTF-8 bytes became U+FFFD, as for extracted pages."}),
       # Lineage (jobs/card.py --trace): where the record starts in its file.
       pa.field("source_offset", pa.int64(), nullable=True,
                metadata={"doc": "JSONL: byte offset of the line (in the decompressed stream); Parquet: row number."})],
    metadata=DOCUMENT.schema.metadata,
)


class InputError(OSError):
    """An input path is missing, unreadable, or of a format no reader handles."""


@dataclass
class ReadConfig:
    """Reader settings (YAML keys under `read:`).

    batch_rows:     rows per yielded table at most.
    batch_bytes:    payload bytes (raw HTML or text) per yielded table at most: bounds a
                    reader's memory (a table is emitted at whichever limit comes first).
    max_raw_bytes:  payload bytes kept per page; longer payloads are cut and get
                    `raw_truncated = True` (the extract stage then drops them as `too_large`).
    """

    batch_rows: int = DEFAULT_BATCH_ROWS
    max_raw_bytes: int = DEFAULT_MAX_RAW_BYTES
    batch_bytes: int = DEFAULT_BATCH_BYTES

    @classmethod
    def from_dict(cls, cfg: dict | None) -> "ReadConfig":
        return from_mapping(cls, cfg, "read")


# ---------------------------------------------------------------- input discovery

def input_format(path: str | Path) -> str:
    """'warc' | 'html' | 'jsonl' | 'parquet' from the file name, else InputError."""
    name = str(path).lower()
    for fmt, suffixes in (("warc", WARC_SUFFIXES), ("html", HTML_SUFFIXES),
                          ("jsonl", JSONL_SUFFIXES), ("parquet", PARQUET_SUFFIXES)):
        if name.endswith(suffixes):
            return fmt
    raise InputError(f"{path}: unknown input format (expected one of "
                     f"{', '.join(WARC_SUFFIXES + HTML_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES)})")


def input_family(fmt: str) -> str:
    """'raw_page' for WARC/HTML, 'document' for JSONL/Parquet."""
    return "raw_page" if fmt in ("warc", "html") else "document"


def expand_inputs(paths: str | Path | list) -> list[Path]:
    """Files named by paths, globs or directories (searched recursively), sorted, deduplicated."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: list[Path] = []
    for p in paths:
        p = str(p)
        if any(ch in p for ch in "*?["):
            matches = sorted(glob.glob(p, recursive=True))
            if not matches:
                raise InputError(f"{p}: glob matched no files")
            found.extend(Path(m) for m in matches if os.path.isfile(m))
        elif os.path.isdir(p):
            files = []
            for root, _, names in os.walk(p):
                for n in names:
                    try:
                        input_format(n)
                    except InputError:
                        continue
                    files.append(Path(root) / n)
            if not files:
                raise InputError(f"{p}: directory holds no readable input files")
            found.extend(sorted(files))
        elif os.path.exists(p):
            found.append(Path(p))
        else:
            raise InputError(f"{p}: no such file or directory")
    out, seen = [], set()
    for f in found:
        input_format(f)  # fail early on a file no reader handles
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _open_checked(path: Path):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot open input file: {exc.strerror or exc}") from exc


# ---------------------------------------------------------------- batching

class _Batcher:
    """Collect row dicts; emit a Table every `size` rows or `max_bytes` of payload
    (`raw` or `text`), whichever comes first."""

    def __init__(self, schema: pa.Schema, size: int, max_bytes: int = DEFAULT_BATCH_BYTES):
        self.schema, self.size, self.max_bytes = schema, max(1, size), max(1, max_bytes)
        self.rows: list[dict] = []
        self.bytes = 0

    def add(self, row: dict) -> pa.Table | None:
        self.rows.append(row)
        self.bytes += len(row.get("raw") or row.get("text") or "")
        if len(self.rows) >= self.size or self.bytes >= self.max_bytes:
            return self.flush()
        return None

    def flush(self) -> pa.Table | None:
        if not self.rows:
            return None
        # Column by column: Arrow's from_pylist walks the row dicts field by field in Python
        # objects; building each column from one list is ~6x faster (0.35 -> 0.06 s a 1,800-page WARC).
        rows = self.rows
        table = pa.Table.from_arrays([pa.array([row.get(f.name) for row in rows], type=f.type) for f in self.schema],
                                     schema=self.schema)
        self.rows, self.bytes = [], 0
        return table


def _stable_id(*parts) -> str:
    return hashlib.sha1("\x1f".join(str(p) for p in parts).encode("utf-8", "surrogatepass")).hexdigest()


def _dropped_raw(source: str, offset: int, reason: str, url: str = "") -> dict:
    return {"id": _stable_id(source, offset, reason), "url": url, "raw": b"", "source": source,
            "source_offset": offset, DROP_REASON: reason, DROP_STAGE: READ_STAGE}


# ---------------------------------------------------------------- WARC

def _parse_content_type(value: str | None) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    parts = [p.strip() for p in value.split(";")]
    mime = parts[0].lower() or None
    charset = None
    for p in parts[1:]:
        if p.lower().startswith("charset="):
            charset = p.split("=", 1)[1].strip().strip("'\"").lower() or None
    return mime, charset


def _parse_warc_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _looks_like_html(head: bytes) -> bool:
    head = head[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head


def _read_capped(stream, cap: int) -> tuple[bytes, bool]:
    data = stream.read(cap + 1)
    if len(data) > cap:
        return data[:cap], True
    return data, False


def _warc_rows(path: Path, cfg: ReadConfig) -> Iterator[dict]:
    from warcio.archiveiterator import ArchiveIterator  # import here: workers that read JSONL never need it

    source = str(path)
    fh = _open_checked(path)
    with fh:
        it = ArchiveIterator(fh)
        next_offset = 0  # where the next record starts: the corrupt tail's position
        try:
            for record in it:
                if record.format not in ("warc", "warc/1.0", "warc/1.1"):
                    # warcio falls back to its lenient ARC parser for anything that is not
                    # WARC; in a .warc file that means garbage, not an ARC record.
                    raise ValueError(f"not a WARC record (parsed as {record.format!r})")
                # Read the payload before asking for the offset: warcio computes offsets
                # by reading the record to its end, which would consume the payload.
                row = _warc_record_row(record, source, cfg)
                offset, length = it.get_record_offset(), it.get_record_length()
                row["source_offset"] = offset
                if not row["id"]:
                    row["id"] = _stable_id(source, offset)
                next_offset = offset + length
                # warcio ends a record quietly when the file (or gzip member) stops short;
                # bytes still owed by the record's length-limited stream mean truncation.
                missing = getattr(record.raw_stream, "limit", 0)
                if missing > 0 or record.rec_type is None:
                    row.update(raw=b"", raw_truncated=None, **{DROP_REASON: "corrupt_warc", DROP_STAGE: READ_STAGE})
                    row["read_error"] = (f"{source} at byte {offset}: record cut short ({missing} bytes missing)"
                                         if missing > 0 else f"{source} at byte {offset}: unparseable record header")
                yield row
        except Exception as exc:  # noqa: BLE001 - any parse failure ends the readable part of the file
            row = _dropped_raw(source, next_offset, "corrupt_warc")
            row["read_error"] = f"{source} at byte {next_offset}: {type(exc).__name__}: {str(exc)[:200]}"
            yield row


def _warc_record_row(record, source: str, cfg: ReadConfig) -> dict:
    """One row per record; `id` is "" when the record has no WARC-Record-ID (caller fills it)."""
    rtype = record.rec_type
    headers = record.rec_headers
    rid = (headers.get_header("WARC-Record-ID") or "").strip("<>")
    url = headers.get_header("WARC-Target-URI") or ""
    if rtype != "response":
        return {**_dropped_raw(source, 0, f"warc_{rtype or 'unknown'}", url), "id": rid}
    http = record.http_headers
    status = None
    mime = charset = None
    header_list = None
    if http is not None:
        try:
            status = int(http.get_statuscode() or 0) or None
        except (TypeError, ValueError):
            status = None
        mime, charset = _parse_content_type(http.get_header("Content-Type"))
        header_list = [{"name": k, "value": v} for k, v in http.headers]
    row = {"id": rid, "url": url, "source": source, "warc_record_id": rid or None,
           "warc_date": _parse_warc_date(headers.get_header("WARC-Date")), "http_status": status,
           "content_type": mime, "charset": charset, "http_headers": header_list,
           DROP_REASON: None, DROP_STAGE: None}
    if status is not None and not 200 <= status < 300:
        return {**row, "raw": b"", DROP_REASON: "http_not_ok", DROP_STAGE: READ_STAGE}
    identified = (headers.get_header("WARC-Identified-Payload-Type") or "").lower()
    try:
        raw, truncated = _read_capped(record.content_stream(), cfg.max_raw_bytes)
    except Exception:  # noqa: BLE001 - a broken Content-Encoding body is this record's problem only
        return {**row, "raw": b"", DROP_REASON: "bad_content_encoding", DROP_STAGE: READ_STAGE}
    is_html = (mime in HTML_CONTENT_TYPES or identified in HTML_CONTENT_TYPES
               or (mime in (None, "", "application/octet-stream", "text/plain") and _looks_like_html(raw)))
    if not is_html:
        return {**row, "raw": b"", DROP_REASON: "non_html", DROP_STAGE: READ_STAGE}
    return {**row, "raw": raw, "raw_truncated": truncated}


# ---------------------------------------------------------------- HTML files

def _html_rows(path: Path, cfg: ReadConfig) -> Iterator[dict]:
    source = str(path)
    fh = _open_checked(path)
    row = {"id": _stable_id(os.path.abspath(path)), "url": Path(path).resolve().as_uri(), "source": source,
           "source_offset": 0, "content_type": "text/html", DROP_REASON: None, DROP_STAGE: None}
    with fh:
        if source.lower().endswith(".gz"):
            try:
                with gzip.GzipFile(fileobj=fh) as gz:
                    raw, truncated = _read_capped(gz, cfg.max_raw_bytes)
            except (OSError, EOFError, zlib.error) as exc:
                yield {**row, "raw": b"", DROP_REASON: "corrupt_gzip", DROP_STAGE: READ_STAGE,
                       "read_error": f"{source}: {type(exc).__name__}: {exc}"}
                return
        else:
            raw, truncated = _read_capped(fh, cfg.max_raw_bytes)
    yield {**row, "raw": raw, "raw_truncated": truncated}


# ---------------------------------------------------------------- documents

def _jsonl_rows(path: Path, cfg: ReadConfig) -> Iterator[dict]:
    source = str(path)
    fh = _open_checked(path)
    stream = gzip.GzipFile(fileobj=fh) if source.lower().endswith(".gz") else fh
    lineno, offset = 0, 0
    with fh:
        try:
            for lineno, line in enumerate(stream, start=1):
                start, offset = offset, offset + len(line)
                if not line.strip():
                    continue
                yield {**_jsonl_row(line, source, lineno), "source_offset": start}
        except (OSError, EOFError, zlib.error) as exc:
            yield {"id": _stable_id(source, lineno + 1), "text": "", "url": None, "source": source,
                   DROP_REASON: "corrupt_gzip", DROP_STAGE: READ_STAGE,
                   "read_error": f"{source} after line {lineno}: {type(exc).__name__}: {exc}"}


def _jsonl_row(line: bytes, source: str, lineno: int) -> dict:
    base = {"id": _stable_id(source, lineno), "text": "", "url": None, "source": source}
    try:
        decoded, charset = line.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        # Keep the line: a stray invalid byte should not cost a document, but say so in a
        # label (rules can drop on it), as extraction does for pages.
        decoded, charset = line.decode("utf-8", errors="replace"), "utf-8-replace"
    try:
        obj = json.loads(decoded)
    except ValueError:
        return {**base, DROP_REASON: "invalid_json", DROP_STAGE: READ_STAGE}
    if not isinstance(obj, dict):
        return {**base, DROP_REASON: "invalid_json", DROP_STAGE: READ_STAGE}
    text = obj.get("text")
    if not isinstance(text, str):
        return {**base, DROP_REASON: "missing_text", DROP_STAGE: READ_STAGE}
    doc_id = obj.get("id")
    url = obj.get("url")
    return {"id": str(doc_id) if doc_id is not None else base["id"], "text": text,
            "url": url if isinstance(url, str) else None, "source": source, DROP_REASON: None, DROP_STAGE: None,
            "charset_used": charset}


def _open_parquet(path: Path) -> pq.ParquetFile:
    """The file's footer, checked: readable Parquet with a `text` column, else InputError."""
    _open_checked(path).close()
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: not a readable Parquet file: {exc}") from exc
    names = pf.schema_arrow.names
    if "text" not in names:
        raise InputError(f"{path}: Parquet input has no 'text' column (columns: {names})")
    return pf


def check_inputs(files: list[Path]) -> None:
    """Open every input once in the driver so an unreadable file fails the job before any
    work, with an error naming it (Parquet: footer and `text` column too; cheap, no rows read)."""
    for f in files:
        if input_format(f) == "parquet":
            _open_parquet(f)
        else:
            _open_checked(f).close()


def _parquet_tables(path: Path, cfg: ReadConfig) -> Iterator[pa.Table]:
    source = str(path)
    pf = _open_parquet(path)
    names = pf.schema_arrow.names
    columns = [c for c in ("id", "text", "url") if c in names]
    row_base = 0
    for batch in pf.iter_batches(batch_size=cfg.batch_rows, columns=columns):
        n = batch.num_rows
        texts = batch.column("text")
        if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
            raise InputError(f"{path}: column 'text' has type {texts.type}, expected string")
        texts = texts.cast(pa.string())
        if "id" in columns:
            ids = [str(v) if v is not None else _stable_id(source, row_base + i)
                   for i, v in enumerate(batch.column("id").to_pylist())]
        else:
            ids = [_stable_id(source, row_base + i) for i in range(n)]
        urls = batch.column("url").cast(pa.string()) if "url" in columns else pa.nulls(n, pa.string())
        missing = texts.is_null()
        reasons = pa.array(["missing_text" if m else None for m in missing.to_pylist()], pa.string())
        stages = pa.array([READ_STAGE if m else None for m in missing.to_pylist()], pa.string())
        yield pa.Table.from_arrays(
            [pa.array(ids, pa.string()), texts.fill_null(""), urls, pa.array([source] * n, pa.string()),
             pa.nulls(n, pa.string()), pa.nulls(n, DOCUMENT.field("fetch_time").type), reasons, stages,
             pa.nulls(n, pa.string()), pa.array(["utf-8"] * n, pa.string()),  # Arrow strings are valid UTF-8
             pa.array(range(row_base, row_base + n), pa.int64())],
            schema=DOCUMENT_READ_SCHEMA)
        row_base += n


# ---------------------------------------------------------------- public generators

def iter_file(path: str | Path, config: ReadConfig | dict | None = None) -> Iterator[pa.Table]:
    """Stream one input file as tables of at most `batch_rows` rows.

    WARC/HTML files yield raw-page tables (`RAW_SCHEMA`); JSONL/Parquet files yield
    document tables (`DOCUMENT_READ_SCHEMA`). Both carry `drop_reason`/`drop_stage`.
    """
    cfg = config if isinstance(config, ReadConfig) else ReadConfig.from_dict(config)
    path = Path(path)
    fmt = input_format(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if fmt == "parquet":
        yield from _parquet_tables(path, cfg)
        return
    rows = {"warc": _warc_rows, "html": _html_rows, "jsonl": _jsonl_rows}[fmt](path, cfg)
    batcher = _Batcher(RAW_SCHEMA if fmt in ("warc", "html") else DOCUMENT_READ_SCHEMA, cfg.batch_rows,
                       cfg.batch_bytes)
    for row in rows:
        table = batcher.add(row)
        if table is not None:
            yield table
    table = batcher.flush()
    if table is not None:
        yield table


def iter_inputs(paths, config: ReadConfig | dict | None = None) -> Iterator[pa.Table]:
    """Stream every file named by `paths` (files, globs, directories) in order; one family only."""
    files = expand_inputs(paths)
    _check_one_family(files)
    for f in files:
        yield from iter_file(f, config)


def _check_one_family(files: list[Path]) -> str:
    families = {input_family(input_format(f)) for f in files}
    if len(families) > 1:
        raise InputError("inputs mix raw pages (WARC/HTML) and documents (JSONL/Parquet); "
                         "run them as separate jobs: " + ", ".join(str(f) for f in files[:5]))
    return families.pop() if families else "raw_page"


# ---------------------------------------------------------------- Ray Data

def read_inputs(paths, config: ReadConfig | dict | None = None, ray_remote_args: dict | None = None,
                max_tasks: int | None = None):
    """A `ray.data.Dataset` over all inputs, one read task per file, streaming its batches.

    `ray_remote_args`: resources of the read tasks (Ray's default, one CPU, when None); equal
    to the next map's, Ray Data fuses the read into that map (curate.pipeline does so for a
    single worker). `max_tasks`: read tasks at most at once (None: as many as fit).
    Returns (dataset, family) where family is 'raw_page' or 'document'.
    """
    import ray

    files = expand_inputs(paths)
    family = _check_one_family(files)
    check_inputs(files)
    cfg = config if isinstance(config, ReadConfig) else ReadConfig.from_dict(config)
    items = [{"path": str(f)} for f in files]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.map_batches(_ReadFiles(cfg), batch_size=1, batch_format="pyarrow", zero_copy_batch=True,
                        compute=ray.data.TaskPoolStrategy(size=max_tasks), **(ray_remote_args or {}))
    return ds, family


def read_raw(paths, config: ReadConfig | dict | None = None):
    """Ray Dataset of raw pages (WARC / HTML inputs); refuses document inputs."""
    ds, family = read_inputs(paths, config)
    if family != "raw_page":
        raise InputError(f"read_raw: inputs are documents (JSONL/Parquet), use read_documents: {paths}")
    return ds


def read_documents(paths, config: ReadConfig | dict | None = None):
    """Ray Dataset of documents (JSONL / Parquet inputs); refuses raw-page inputs."""
    ds, family = read_inputs(paths, config)
    if family != "document":
        raise InputError(f"read_documents: inputs are raw pages (WARC/HTML), use read_raw: {paths}")
    return ds


class _ReadFiles:
    """map_batches generator: each input batch names one file; yield its tables."""

    def __init__(self, cfg: ReadConfig):
        self.cfg = cfg

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for path in batch.column("path").to_pylist():
            yield from iter_file(path, self.cfg)
