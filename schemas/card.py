"""Dataset cards as data: compute the card tables of a written dataset and store them as Arrow.

`write_card(DIR, kind)` reads the kept rows (`DIR/data/*.parquet`), the dropped rows
(`DIR/dropped/*.parquet`, with `drop_reason`/`drop_stage`) and the row accounting
(`DIR/accounting.json`), and writes `DIR/card/card.arrow` plus the rendered
`card.md`, `card.html` and PNG plots.

`card.arrow` is one Arrow IPC file holding a single row; each column is one card table
stored as a list of structs (read it back with `read_card`, which returns the tables):

    run         job, kind, schema version, code version, start/end, config, inputs, models
    funnel      stage, position, rows_in, kept, dropped, seconds
    drops       stage, reason, rows
    stats       split, column, source, kind of statistic, count, nulls, min/max, mean, std, quantiles
    histograms  split, column, bin, lo, hi, count  (kept and dropped share a column's bin edges)
    top_values  split, column, rank, value, count
    samples     split, reason, id, text (truncated), text_chars, labels (JSON)

Splits are "kept" and "dropped". See `schemas.card_stats` for how statistics stay
exact or bounded while streaming.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from schemas.card_features import Feature, default_text_column, features_for, label_columns, token_lengths
from schemas.card_stats import (QUANTILES, CategoricalStats, ColumnStats, NumericStats, Reservoir, is_categorical,
                                is_numeric)
from schemas.funnel import StageCount, read_accounting
from schemas.records import get_kind

log = logging.getLogger(__name__)

CARD_VERSION = 1
CARD_DIR = "card"
CARD_FILE = "card.arrow"
SAMPLES_PER_GROUP = 5
SAMPLE_TEXT_CHARS = 500
TOP_K = 20
BATCH_ROWS = 8192
KEPT, DROPPED = "kept", "dropped"
QUANTILE_NAMES = tuple(f"q{int(round(q * 100)):02d}" for q in QUANTILES)


class CardVersionError(ValueError):
    """A card file was written by a newer raymill than this one."""


# ---------------------------------------------------------------------------- table schemas

RUN_SCHEMA = pa.schema([
    ("job", pa.string()), ("kind", pa.string()), ("schema_version", pa.int32()),
    ("code_version", pa.string()), ("started", pa.string()), ("finished", pa.string()),
    ("created", pa.string()), ("config_json", pa.string()),
    ("inputs", pa.list_(pa.struct([("path", pa.string()), ("fingerprint", pa.string())]))),
    ("models", pa.list_(pa.string())), ("license", pa.string()), ("text_column", pa.string()),
    ("tokenizer", pa.string()), ("rows_kept", pa.int64()), ("rows_dropped", pa.int64()),
    ("warnings", pa.list_(pa.string())), ("extra_json", pa.string()),
])
FUNNEL_SCHEMA = pa.schema([("stage", pa.string()), ("position", pa.int32()), ("rows_in", pa.int64()),
                           ("kept", pa.int64()), ("dropped", pa.int64()), ("seconds", pa.float64())])
DROPS_SCHEMA = pa.schema([("stage", pa.string()), ("reason", pa.string()), ("rows", pa.int64())])
STATS_SCHEMA = pa.schema(
    [("split", pa.string()), ("column", pa.string()), ("source", pa.string()), ("stat_kind", pa.string()),
     ("count", pa.int64()), ("nulls", pa.int64()), ("nan", pa.int64()), ("distinct", pa.int64()),
     ("min", pa.float64()), ("max", pa.float64()), ("mean", pa.float64()), ("std", pa.float64())]
    + [(name, pa.float64()) for name in QUANTILE_NAMES] + [("quantiles_exact", pa.bool_())])
HIST_SCHEMA = pa.schema([("split", pa.string()), ("column", pa.string()), ("bin", pa.int32()),
                         ("lo", pa.float64()), ("hi", pa.float64()), ("count", pa.int64())])
TOP_SCHEMA = pa.schema([("split", pa.string()), ("column", pa.string()), ("rank", pa.int32()),
                        ("value", pa.string()), ("count", pa.int64())])
SAMPLES_SCHEMA = pa.schema([("split", pa.string()), ("reason", pa.string()), ("id", pa.string()),
                            ("text", pa.string()), ("text_chars", pa.int64()), ("labels", pa.string())])
TABLE_SCHEMAS = {"run": RUN_SCHEMA, "funnel": FUNNEL_SCHEMA, "drops": DROPS_SCHEMA, "stats": STATS_SCHEMA,
                 "histograms": HIST_SCHEMA, "top_values": TOP_SCHEMA, "samples": SAMPLES_SCHEMA}


@dataclass
class Card:
    """The card tables of one dataset (see the module docstring)."""

    kind: str
    schema_version: int
    tables: dict[str, pa.Table] = field(default_factory=dict)

    @property
    def run(self) -> dict:
        rows = self.tables["run"].to_pylist()
        return rows[0] if rows else {}

    def table(self, name: str) -> pa.Table:
        return self.tables[name]

    @property
    def rows_kept(self) -> int:
        return int(self.run.get("rows_kept") or 0)

    @property
    def rows_dropped(self) -> int:
        return int(self.run.get("rows_dropped") or 0)


# ---------------------------------------------------------------------------- reading / writing


def card_path(dataset_dir: str | Path) -> Path:
    return Path(dataset_dir) / CARD_DIR / CARD_FILE


def save_card(card: Card, path: str | Path) -> Path:
    """Write the card tables as one single-row Arrow IPC file (atomically, via a temporary name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays, fields = [], []
    for name, schema in TABLE_SCHEMAS.items():
        table = card.tables[name].select(schema.names).cast(schema)
        struct_type = pa.struct(list(schema))
        values = pa.StructArray.from_arrays([table.column(n).combine_chunks() for n in schema.names],
                                            fields=list(schema)) if table.num_rows else pa.array([], struct_type)
        arrays.append(pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values))
        fields.append(pa.field(name, pa.list_(struct_type)))
    metadata = {"raymill.card_version": str(CARD_VERSION), "raymill.kind": card.kind,
                "raymill.version": str(card.schema_version)}
    one_row = pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=metadata))
    tmp = path.with_name(f".{path.name}.tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, one_row.schema) as writer:
        writer.write_table(one_row)
    tmp.replace(path)
    return path


def read_card(path: str | Path) -> Card:
    """Read `card.arrow` (or the dataset directory holding `card/card.arrow`)."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILE if (path / CARD_FILE).exists() or path.name == CARD_DIR else card_path(path)
    if not path.exists():
        raise FileNotFoundError(f"card file {path} not found: run write_card (or the job that writes the "
                                f"dataset) first")
    try:
        one_row = pa.ipc.open_file(str(path)).read_all()
    except pa.ArrowInvalid as exc:
        raise ValueError(f"card file {path} is not an Arrow IPC file: {exc}") from None
    meta = {k.decode(): v.decode() for k, v in (one_row.schema.metadata or {}).items()}
    if "raymill.card_version" not in meta:
        raise ValueError(f"card file {path} has no raymill.card_version metadata: not a raymill card")
    version = int(meta["raymill.card_version"])
    if version > CARD_VERSION:
        raise CardVersionError(f"card file {path} has card version {version}, newer than this raymill "
                               f"understands ({CARD_VERSION}); upgrade raymill to read it")
    tables = {}
    for name, schema in TABLE_SCHEMAS.items():
        if name not in one_row.column_names:
            raise ValueError(f"card file {path} (card version {version}) has no {name!r} table")
        values = one_row.column(name).combine_chunks().flatten()
        table = pa.Table.from_struct_array(values) if len(values) else schema.empty_table()
        tables[name] = table
    return Card(kind=meta.get("raymill.kind", ""), schema_version=int(meta.get("raymill.version", 0)), tables=tables)


# ---------------------------------------------------------------------------- run metadata


def code_version() -> str:
    """`git describe` of the checkout raymill runs from, else the installed package version."""
    repo = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=repo, capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return f"raymill {version('raymill')}"
    except Exception:  # noqa: BLE001 - no metadata is not an error for a card
        return "unknown"


def fingerprint(path: str | Path) -> str | None:
    """A cheap content fingerprint: names, sizes and the first 64 KiB of each file (None if absent)."""
    path = Path(path)
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())[:10_000]
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(path) if f != path else f.name}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(65536))
    return f"sha256:{h.hexdigest()[:32]}"


def _inputs(run: dict) -> list[dict]:
    given = run.get("input_fingerprints")
    if isinstance(given, dict):
        return [{"path": str(k), "fingerprint": str(v)} for k, v in given.items()]
    inputs = run.get("inputs") or run.get("input") or []
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    return [{"path": str(p), "fingerprint": fingerprint(p) if isinstance(p, (str, Path)) else None} for p in inputs]


def _as_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    return str(value)


def _run_row(run: dict, kind: str, version: int, text_column: str | None, tokenizer, kept: int, dropped: int,
             warnings: list[str]) -> dict:
    known = {"job", "config", "code_version", "started", "start", "finished", "end", "inputs", "input",
             "input_fingerprints", "models", "license"}
    models = run.get("models") or []
    models = [models] if isinstance(models, str) else [str(m) for m in models]
    tokenizer_name = None
    if tokenizer is not None:
        tokenizer_name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
        if tokenizer_name not in models:
            models.append(f"tokenizer: {tokenizer_name}")
    return {
        "job": _as_text(run.get("job")), "kind": kind, "schema_version": version,
        "code_version": _as_text(run.get("code_version")) or code_version(),
        "started": _as_text(run.get("started", run.get("start"))),
        "finished": _as_text(run.get("finished", run.get("end"))),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config_json": json.dumps(run.get("config") or {}, default=str, sort_keys=True),
        "inputs": _inputs(run), "models": models, "license": _as_text(run.get("license")),
        "text_column": text_column, "tokenizer": tokenizer_name, "rows_kept": kept, "rows_dropped": dropped,
        "warnings": warnings,
        "extra_json": json.dumps({k: v for k, v in run.items() if k not in known}, default=str, sort_keys=True),
    }


# ---------------------------------------------------------------------------- statistics


class _Split:
    """One split (kept or dropped) of a dataset: its files, unified schema and accumulators."""

    def __init__(self, name: str, files: list[Path]):
        self.name, self.files = name, files
        schemas = [pq.read_schema(f) for f in files]
        self.schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
        self.rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        self.stats: dict[str, ColumnStats] = {}
        self.samples: dict[str | None, tuple[Reservoir, list]] = {}

    def batches(self, columns: list[str]):
        if not self.files or not columns:
            return
        dataset = pads.dataset([str(f) for f in self.files], format="parquet", schema=self.schema)
        # Little readahead: memory stays around a few batches of text, whatever the dataset size.
        yield from dataset.to_batches(columns=columns, batch_size=BATCH_ROWS, batch_readahead=2, fragment_readahead=1)


def _outputs(feat: Feature) -> set[str]:
    """Statistic names a feature produces (see _CardBuilder._values)."""
    return {f"{feat.name}_chars", f"{feat.name}_tokens"} if feat.text else {feat.name}


class _CardBuilder:
    def __init__(self, kind: str, kept: _Split, dropped: _Split, text_column: str | None, tokenizer):
        self.kind, self.kept, self.dropped, self.tokenizer = kind, kept, dropped, tokenizer
        names = list(dict.fromkeys(kept.schema.names + dropped.schema.names))
        self.text_column = text_column if text_column is not None else default_text_column(kind, names)
        self.features = features_for(kind, names, self.text_column)
        self.labels = {s.name: label_columns(s.schema, self.text_column) for s in (kept, dropped)}

    # Pass 1: moments, reservoirs, top-k and samples. Then histogram counts on the shared
    # edges: from the reservoir of every column it holds whole (up to RESERVOIR_SIZE values,
    # the usual case for a small job), and a second pass over the data only for the others.
    def compute(self) -> None:
        for split in (self.kept, self.dropped):
            self._pass(split, first=True)
        self._share_edges()
        for split in (self.kept, self.dropped):
            pending = {name for name, st in split.stats.items()
                       if st.numeric is not None and not st.numeric.histogram_from_sample()}
            if pending:
                self._pass(split, first=False, only=pending)

    def _columns(self, split: _Split, first: bool, only: set[str] | None = None) -> list[str]:
        """Dataset columns a pass reads; the second reads only what the `only` statistics need."""
        if first:
            cols = list(self.labels[split.name])
        else:
            cols = [c for c in self.labels[split.name]
                    if is_numeric(split.schema.field(c).type) and (only is None or c in only)]
        for feat in self.features:
            if first or only is None or not only.isdisjoint(_outputs(feat)):
                cols += [c for c in feat.columns if c in split.schema.names]
        if first:
            cols += [c for c in ("id", self.text_column, "drop_reason") if c and c in split.schema.names]
        return list(dict.fromkeys(cols))

    def _values(self, batch: pa.RecordBatch) -> dict[str, tuple[str, pa.Array]]:
        """Every statistic column of a batch: (source, values)."""
        out = {name: ("label", batch.column(name)) for name in self.labels_of(batch)}
        for feat in self.features:
            if not all(c in batch.schema.names for c in feat.columns):
                continue
            if feat.text and not feat.chars and self.tokenizer is None:
                continue
            values = feat.compute(batch)
            if feat.text:
                if feat.chars:
                    out[f"{feat.name}_chars"] = ("derived", pc.utf8_length(values))
                if self.tokenizer is not None:
                    out[f"{feat.name}_tokens"] = ("derived", token_lengths(self.tokenizer, values))
            else:
                out[feat.name] = ("derived", values)
        return out

    def labels_of(self, batch: pa.RecordBatch) -> list[str]:
        return [n for n in batch.schema.names if n in self._all_labels]

    @property
    def _all_labels(self) -> set[str]:
        return set(self.labels[KEPT]) | set(self.labels[DROPPED])

    def _pass(self, split: _Split, first: bool, only: set[str] | None = None) -> None:
        for batch in split.batches(self._columns(split, first, only)):
            for name, (source, values) in self._values(batch).items():
                if first:
                    self._update(split, name, source, values)
                elif only is None or name in only:
                    st = split.stats.get(name)
                    if st is not None and st.numeric is not None:
                        st.numeric.update_histogram(values)
            if first:
                self._sample(split, batch)

    def _update(self, split: _Split, name: str, source: str, values: pa.Array) -> None:
        st = split.stats.get(name)
        if st is None:
            seed = int(hashlib.md5(f"{split.name}/{name}".encode()).hexdigest()[:8], 16)
            st = ColumnStats(split.name, name, source)
            if is_numeric(values.type):
                st.numeric = NumericStats(pa.types.is_integer(values.type), seed)
            elif is_categorical(values.type) or pa.types.is_null(values.type):
                st.categorical = CategoricalStats()
            else:
                return
            split.stats[name] = st
        (st.numeric or st.categorical).update(values)

    def _share_edges(self) -> None:
        """Kept and dropped get the same bin edges per column, so their histograms stack."""
        names = set(self.kept.stats) | set(self.dropped.stats)
        for name in names:
            parts = [s.stats[name].numeric for s in (self.kept, self.dropped)
                     if name in s.stats and s.stats[name].numeric is not None]
            if not parts:
                continue
            combined = NumericStats(all(p.integer for p in parts))
            combined.count = sum(p.count for p in parts)
            combined.min = min(p.min for p in parts)
            combined.max = max(p.max for p in parts)
            combined.finish_first_pass()
            for p in parts:
                p.edges = combined.edges
                p.hist = np.zeros_like(combined.hist)

    def _sample(self, split: _Split, batch: pa.RecordBatch) -> None:
        """Keep a few rows per group (kept; dropped per reason) with a uniform reservoir each."""
        if split.name == DROPPED and "drop_reason" in batch.schema.names:
            reasons = pc.fill_null(batch.column("drop_reason"), "(no reason)")
            groups = {r: pc.equal(reasons, r) for r in pc.unique(reasons).to_pylist()}
        else:
            groups = {None: None}
        for reason, mask in groups.items():
            sub = batch if mask is None else batch.filter(mask)
            if reason not in split.samples:
                seed = int(hashlib.md5(f"{split.name}/{reason}".encode()).hexdigest()[:8], 16)
                split.samples[reason] = (Reservoir(SAMPLES_PER_GROUP, seed), [None] * SAMPLES_PER_GROUP)
            reservoir, slots = split.samples[reason]
            keep, where = reservoir.slots(sub.num_rows)
            if len(keep):
                rows = sub.take(pa.array(keep)).to_pylist()
                for row, slot in zip(rows, where):
                    slots[slot] = self._sample_row(split.name, reason, row)

    def _sample_row(self, split: str, reason: str | None, row: dict) -> dict:
        text = self._row_text(row)
        labels = {k: v for k, v in row.items() if k in self._all_labels and k not in ("drop_reason",)}
        return {"split": split, "reason": reason, "id": None if row.get("id") is None else str(row["id"]),
                "text": None if text is None else text[:SAMPLE_TEXT_CHARS], "text_chars": None if text is None else len(text),
                "labels": json.dumps(labels, default=str, ensure_ascii=False)}

    def _row_text(self, row: dict) -> str | None:
        if self.text_column and row.get(self.text_column) is not None:
            return str(row[self.text_column])
        parts = []
        for key in ("messages", "prompt"):
            for turn in row.get(key) or []:
                parts.append(f"{turn['role']}: {turn['content']}")
        for key in ("chosen", "rejected", "response"):
            if row.get(key) is not None:
                parts.append(f"{key}: {row[key]}")
        return "\n".join(parts) if parts else None

    # ------------------------------------------------------------------ tables

    def tables(self) -> dict[str, pa.Table]:
        stats, hists, tops, samples = [], [], [], []
        for split in (self.kept, self.dropped):
            for name in sorted(split.stats):
                st = split.stats[name]
                stats.append(self._stats_row(st))
                if st.numeric is not None and st.numeric.hist is not None:
                    edges = st.numeric.edges
                    for i, n in enumerate(st.numeric.hist.tolist()):
                        hists.append({"split": split.name, "column": name, "bin": i, "lo": float(edges[i]),
                                      "hi": float(edges[i + 1]), "count": int(n)})
                if st.categorical is not None:
                    for rank, (value, n) in enumerate(st.categorical.top(TOP_K)):
                        tops.append({"split": split.name, "column": name, "rank": rank, "value": value, "count": n})
            for reason in sorted(split.samples, key=lambda r: (r is not None, r or "")):
                samples += [s for s in split.samples[reason][1] if s is not None]
        return {
            "stats": pa.Table.from_pylist(stats, schema=STATS_SCHEMA),
            "histograms": pa.Table.from_pylist(hists, schema=HIST_SCHEMA),
            "top_values": pa.Table.from_pylist(tops, schema=TOP_SCHEMA),
            "samples": pa.Table.from_pylist(samples, schema=SAMPLES_SCHEMA),
        }

    @staticmethod
    def _stats_row(st: ColumnStats) -> dict:
        row = {"split": st.split, "column": st.column, "source": st.source}
        if st.numeric is not None:
            n = st.numeric
            row.update(stat_kind="numeric", count=n.count, nulls=n.nulls, nan=n.nan, distinct=None,
                       min=n.min if n.count else None, max=n.max if n.count else None, mean=n.mean(), std=n.std(),
                       quantiles_exact=n.exact_quantiles)
            row.update(dict(zip(QUANTILE_NAMES, n.quantiles())))
        else:
            c = st.categorical
            row.update(stat_kind="categorical", count=c.count, nulls=c.nulls, nan=0,
                       distinct=len(c.counts) if not c.untracked else None)
        return row


# ---------------------------------------------------------------------------- funnel


def _funnel_tables(funnel: list[StageCount]) -> tuple[pa.Table, pa.Table]:
    rows, drops = [], []
    for i, s in enumerate(funnel):
        s.check()  # in = kept + dropped, or a clear error naming the stage
        rows.append({"stage": s.stage, "position": i, "rows_in": s.rows_in, "kept": s.kept,
                     "dropped": sum(s.dropped.values()), "seconds": float(s.seconds or 0.0)})
        drops += [{"stage": s.stage, "reason": r, "rows": n} for r, n in sorted(s.dropped.items(), key=lambda kv: -kv[1])]
    return pa.Table.from_pylist(rows, schema=FUNNEL_SCHEMA), pa.Table.from_pylist(drops, schema=DROPS_SCHEMA)


def _funnel_from_dropped(kept_rows: int, dropped: _Split) -> list[StageCount]:
    """Without accounting.json: one stage per drop_stage found in the dropped rows (order unknown)."""
    by_stage: dict[str, dict[str, int]] = {}
    cols = [c for c in ("drop_stage", "drop_reason") if c in dropped.schema.names]
    for batch in dropped.batches(cols):
        stages = batch.column("drop_stage") if "drop_stage" in cols else pa.nulls(batch.num_rows, pa.string())
        reasons = batch.column("drop_reason") if "drop_reason" in cols else pa.nulls(batch.num_rows, pa.string())
        for st, rs in zip(stages.to_pylist(), reasons.to_pylist()):
            d = by_stage.setdefault(st or "(unknown stage)", {})
            d[rs or "(no reason)"] = d.get(rs or "(no reason)", 0) + 1
    total_dropped = sum(sum(d.values()) for d in by_stage.values())
    return [StageCount(stage="all stages", rows_in=kept_rows + total_dropped, kept=kept_rows,
                       dropped={f"{st}/{r}" if len(by_stage) > 1 else r: n
                                for st, d in by_stage.items() for r, n in d.items()})]


# ---------------------------------------------------------------------------- entry point


def _parquet_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.parquet")) if directory.is_dir() else []


def _schema_version(kind: str, files: list[Path]) -> int:
    expected = get_kind(kind)
    for f in files:
        meta = {k.decode(): v.decode() for k, v in (pq.read_schema(f).metadata or {}).items()}
        if "raymill.kind" in meta and meta["raymill.kind"] != kind:
            raise ValueError(f"{f} holds raymill kind {meta['raymill.kind']!r}, but the card was asked for {kind!r}")
        if "raymill.version" in meta:
            version = int(meta["raymill.version"])
            if version > expected.version:
                raise ValueError(f"{f} has {kind} schema version {version}, newer than this raymill "
                                 f"understands ({expected.version}); upgrade raymill")
            return version
    return expected.version


def compute_card(dataset_dir: str | Path, kind: str, run: dict | None = None,
                 funnel: list[StageCount] | None = None, text_column: str | None = None, tokenizer=None) -> Card:
    """Compute the card tables of a written dataset directory (nothing is written)."""
    dataset_dir = Path(dataset_dir)
    data_dir, dropped_dir = dataset_dir / "data", dataset_dir / "dropped"
    if not data_dir.is_dir() and not dropped_dir.is_dir():
        raise FileNotFoundError(f"{data_dir} not found: a dataset directory holds data/*.parquet "
                                f"(and optionally dropped/*.parquet)")
    kept = _Split(KEPT, _parquet_files(data_dir))
    dropped = _Split(DROPPED, _parquet_files(dropped_dir))
    version = _schema_version(kind, kept.files + dropped.files)
    run = dict(run or {})
    warnings: list[str] = []
    if funnel is None:
        try:
            funnel, accounting_run = read_accounting(dataset_dir)
            run = {**accounting_run, **run}
        except FileNotFoundError:
            funnel = _funnel_from_dropped(kept.rows, dropped)
            warnings.append("no accounting.json: the funnel was rebuilt from the dropped rows "
                            "(stage order and timings unknown)")
    # Warnings the job itself recorded (e.g. model calls that failed after retries) belong on the card.
    warnings.extend(str(w) for w in run.get("warnings") or [])
    funnel_table, drops_table = _funnel_tables(funnel)
    if funnel and funnel[-1].kept != kept.rows:
        warnings.append(f"the funnel's last stage {funnel[-1].stage!r} kept {funnel[-1].kept} rows, "
                        f"but {data_dir} holds {kept.rows}")
    builder = _CardBuilder(kind, kept, dropped, text_column, tokenizer)
    builder.compute()
    tables = builder.tables()
    tables["funnel"], tables["drops"] = funnel_table, drops_table
    tables["run"] = pa.Table.from_pylist(
        [_run_row(run, kind, version, builder.text_column, tokenizer, kept.rows, dropped.rows, warnings)],
        schema=RUN_SCHEMA)
    for w in warnings:
        log.warning("card for %s: %s", dataset_dir, w)
    return Card(kind=kind, schema_version=version, tables=tables)


def write_card(dataset_dir, kind: str, run: dict | None = None, funnel: list[StageCount] | None = None,
               text_column: str | None = None, tokenizer=None) -> Path:
    """Compute the card of `dataset_dir`, write `card/card.arrow` and render it; return the card directory."""
    from schemas.card_render import render_card

    card = compute_card(dataset_dir, kind, run=run, funnel=funnel, text_column=text_column, tokenizer=tokenizer)
    return store_card(card, Path(dataset_dir) / CARD_DIR)


def store_card(card: Card, card_dir: str | Path) -> Path:
    """Write card.arrow and its renderings into `card_dir` atomically (earlier compare-* reports survive)."""
    import shutil

    from schemas.card_render import render_card
    from schemas.dataset_io import atomic_output_dir

    card_dir = Path(card_dir)
    with atomic_output_dir(card_dir) as tmp:
        for old in sorted(card_dir.glob("compare-*")) if card_dir.is_dir() else []:
            if old.is_file():
                shutil.copy2(old, tmp / old.name)
        save_card(card, tmp / CARD_FILE)
        render_card(card, tmp)
    return card_dir


def rerender(dataset_dir: str | Path) -> Path:
    """Re-render card.md/html/PNGs of `dataset_dir` from its card.arrow alone (no recomputation)."""
    dataset_dir = Path(dataset_dir)
    card_dir = dataset_dir if dataset_dir.name == CARD_DIR and (dataset_dir / CARD_FILE).exists() else dataset_dir / CARD_DIR
    card = read_card(card_dir / CARD_FILE)
    return store_card(card, card_dir)


