"""Dataset formats in, and a registry so a dataset is described once and named after.

Formats (the layout of one row) and the record kind each becomes:
- `sft`        -> sft:        `messages` [{role, content, tool_calls?}], optional `system`,
                              `tools`; a leading system message (TRL style) is accepted.
- `alpaca`     -> sft:        `instruction`, `input`, `output`, optional `history`, `system`
                              (with `ranking: true`: `chosen` / `rejected` -> preference).
- `sharegpt`   -> sft:        `conversations` [{from, value}], optional `system`, `tools`
                              (with `ranking: true`: `chosen` / `rejected` -> preference).
- `preference` -> preference: `prompt`, `chosen`, `rejected` (ours or TRL's, string or messages).
- `text`       -> text:       `text` (pretraining documents); `.txt` files: one document a line.
- `hh_rlhf`    -> preference: Anthropic HH-RLHF `chosen` / `rejected` full transcripts, split at
                              the last shared "Assistant:" into prompt turns and two replies.
- `ranked`     -> ranked_preference: `prompt`, `responses` best first (or ordered by `scores`
                              / `ranks`), optional `system`.
- `oasst`      -> ranked_preference: OpenAssistant message trees (nested, or the flat export
                              with parent ids), one ranked list per prompter turn.

Files: `.jsonl`, `.json` (a JSON array, read whole), `.parquet`, `.txt`, or a directory of
them. The registry is a YAML or JSON file mapping a name to {path, format, columns,
split, ranking, system}; LLaMA-Factory's `dataset_info.json` entries are read as
LLaMA-Factory reads them: file_name, formatting (default alpaca), ranking, `columns` under
LLaMA-Factory's names (prompt/query/response/history/messages/system/tools/chosen/rejected),
sharegpt `tags` (role/content keys and speaker names), paths relative to the registry file.
Rows with images/videos/audios are dropped as `unsupported_media` (text-only training).
`system` is the dataset's default system prompt, used where a row has none.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

from schemas import convert
from schemas.validate import SchemaError
from train.tokenize import Drop

FORMATS = ("sft", "alpaca", "sharegpt", "preference", "text", "hh_rlhf", "ranked", "oasst")
RANKED_FORMATS = ("ranked", "oasst")
FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".txt")
REGISTRY_ENV = "RAYMILL_DATASETS"
DROP_MEDIA = "unsupported_media"
DATASET_DATA_DIR = "data"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    path: str
    format: str
    columns: Mapping[str, str] = field(default_factory=dict)  # our field -> column in the file
    split: str | None = None
    ranking: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)  # sharegpt turn layout (LLaMA-Factory `tags`)
    system: str | None = None  # default system prompt for rows without one

    @property
    def kind(self) -> str:
        if self.format == "text":
            return "text"
        if self.format in RANKED_FORMATS:
            return "ranked_preference"
        if self.format in ("preference", "hh_rlhf") or self.ranking:
            return "preference"
        return "sft"

    def files(self) -> list[Path]:
        """The data files of this dataset, sorted (a split picks `<split>*` files or a `<split>/` folder)."""
        path = Path(self.path)
        if not path.exists():
            raise FileNotFoundError(f"dataset {self.name!r}: {path} does not exist")
        if path.is_file():
            return [path]
        if (path / DATASET_DATA_DIR).is_dir():
            # A raymill dataset directory (curate/synth output): data/ holds the kept rows;
            # dropped/, accounting.json and card/ beside it are reports, not training data.
            path = path / DATASET_DATA_DIR
        root = path / self.split if self.split and (path / self.split).is_dir() else path
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in FILE_SUFFIXES
                       and not p.name.startswith((".", "_")))
        if self.split and root == path:
            files = [p for p in files if p.name.startswith(self.split)] or files
        if not files:
            raise FileNotFoundError(f"dataset {self.name!r}: no {'/'.join(FILE_SUFFIXES)} files under {root}")
        return files


def _load_registry(registry: str | Path | Mapping | None) -> tuple[dict, Path]:
    if registry is None:
        registry = os.environ.get(REGISTRY_ENV)
        if not registry:
            return {}, Path.cwd()
    if isinstance(registry, Mapping):
        return dict(registry), Path.cwd()
    path = Path(registry)
    if not path.exists():
        raise FileNotFoundError(f"dataset registry {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"dataset registry {path} must map names to entries")
    return data, path.parent


# `columns` keys of our own formats: our field -> the file's column.
OWN_FORMAT_COLUMNS = {
    "sft": ("id", "messages", "system", "tools"),
    "preference": ("id", "prompt", "chosen", "rejected", "system", "margin"),
    "text": ("id", "text"),
    "hh_rlhf": ("id", "chosen", "rejected"),
    "ranked": ("id", "prompt", "responses", "scores", "ranks", "system"),
    "oasst": (),
}


def _check_columns(name: str, fmt: str, columns: Any, tags: Any) -> tuple[dict, dict]:
    if fmt in convert.LLAMAFACTORY_COLUMNS:
        return convert.llamafactory_columns(fmt, columns, name), convert.llamafactory_tags(fmt, tags, name)
    if tags:
        raise ValueError(f"dataset {name!r}: tags apply to formatting sharegpt only, not {fmt}")
    columns = dict(columns or {})
    valid = OWN_FORMAT_COLUMNS.get(fmt, ())
    for key in columns:
        if key not in valid:
            raise ValueError(f"dataset {name!r}: unknown columns key {key!r} for format {fmt}; valid: {', '.join(valid)}")
    return columns, {}


def spec_from_entry(name: str, entry: Mapping[str, Any], base: Path = Path(".")) -> DatasetSpec:
    path = entry.get("path", entry.get("file_name"))
    if not path:
        raise ValueError(f"dataset {name!r}: registry entry needs 'path' (or 'file_name')")
    path = Path(path) if Path(path).is_absolute() else base / path
    fmt = entry.get("format", entry.get("formatting"))
    ranking = False
    if fmt is None and ("file_name" in entry or "columns" in entry or "ranking" in entry):
        fmt = "alpaca"  # LLaMA-Factory's default formatting for a dataset_info entry
    elif fmt is None:
        fmt, ranking = sniff_format(DatasetSpec(name, str(path), "text").files()[0])
    if fmt not in FORMATS:
        raise ValueError(f"dataset {name!r}: unknown format {fmt!r}; known: {list(FORMATS)}")
    columns, tags = _check_columns(name, fmt, entry.get("columns"), entry.get("tags"))
    system = entry.get("system")
    if system is not None and (not isinstance(system, str) or fmt == "text"):
        raise ValueError(f"dataset {name!r}: system must be a default system prompt (a string) for a "
                         f"conversation format, got {system!r} for format {fmt}")
    return DatasetSpec(name=name, path=str(path), format=fmt, columns=columns, split=entry.get("split"),
                       ranking=bool(entry.get("ranking", ranking)), tags=tags, system=system or None)


def sniff_format(path: Path) -> tuple[str, bool]:
    """(format, ranking) guessed from the keys of the first row of a file."""
    if path.suffix == ".txt":
        return "text", False
    first = next(iter_file_rows(path), None)
    if first is None:
        raise ValueError(f"{path} has no rows to tell its format from")
    keys = set(first)
    ranking = {"chosen", "rejected"} <= keys
    if "message_tree_id" in keys and (isinstance(first.get("prompt"), dict) or "parent_id" in keys):
        return "oasst", False
    if "responses" in keys and "prompt" in keys:
        return "ranked", False
    if ranking and keys <= {"id", "chosen", "rejected"} and str(first.get("chosen", "")).lstrip("\n").startswith("Human:"):
        return "hh_rlhf", False
    if "conversations" in keys:
        return "sharegpt", ranking
    if "instruction" in keys:
        return "alpaca", ranking
    if "prompt" in keys and ranking:
        return "preference", True
    if "messages" in keys:
        return "sft", False
    if "text" in keys:
        return "text", False
    raise ValueError(f"cannot tell the format of {path} from its keys {sorted(keys)}; name it in a registry entry")


def load_dataset_spec(name_or_path: str | Mapping | DatasetSpec, registry: str | Path | Mapping | None = None,
                      **overrides: Any) -> DatasetSpec:
    """A dataset by registry name, by path (format sniffed), or from an inline entry dict."""
    if isinstance(name_or_path, DatasetSpec):
        spec = name_or_path
    elif isinstance(name_or_path, Mapping):
        entry = dict(name_or_path)
        spec = spec_from_entry(str(entry.get("name") or entry.get("path") or entry.get("file_name")), entry)
    else:
        entries, base = _load_registry(registry)
        if name_or_path in entries:
            spec = spec_from_entry(name_or_path, entries[name_or_path], base)
        elif Path(name_or_path).exists():
            spec = spec_from_entry(Path(name_or_path).stem, {"path": name_or_path})
        else:
            known = f"; registry has {sorted(entries)}" if entries else ""
            raise FileNotFoundError(f"dataset {name_or_path!r} is neither a registry name nor a path{known}")
    return replace(spec, **overrides) if overrides else spec


# ---------------------------------------------------------------- reading rows, streaming
def iter_file_rows(path: Path) -> Iterator[dict]:
    """Raw rows of one file, streamed (a JSON array file is the exception: read whole)."""
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)
    elif path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        yield from (data if isinstance(data, list) else [data])
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    elif path.suffix == ".txt":
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield {"text": line.rstrip("\n")}
    else:
        raise ValueError(f"unsupported file type {path}")


def iter_raw_rows(spec: DatasetSpec) -> Iterator[dict]:
    for path in spec.files():
        if spec.format == "oasst":
            yield from _oasst_rows(iter_file_rows(path))
        else:
            yield from iter_file_rows(path)


INVALID_ROW_KEY = "_raymill_invalid_row"  # a raw row that could not even be read as rows; convert_row drops it


def _oasst_rows(rows: Iterator[dict]) -> Iterator[dict]:
    """A tree holds one ranked list per prompter turn, so the read expands each tree into
    ranked-list rows (one in, several out) before the one-row-in, one-out conversion."""
    trees = convert.oasst_trees(rows)
    while True:
        try:
            tree = next(trees)
            yield from convert.oasst_ranked_rows(tree)
        except StopIteration:
            return
        except SchemaError as exc:
            yield {INVALID_ROW_KEY: str(exc)}


# ---------------------------------------------------------------- raw row -> our kinds
def _reason(exc: SchemaError) -> str:
    if "from" in exc.field or "role" in exc.field or "speaker" in exc.problem:
        return "unknown_role"
    if "missing" in exc.problem:
        return "missing_field"
    return "invalid_record"


def _renamed(row: dict, spec: DatasetSpec) -> dict:
    if spec.format in convert.LLAMAFACTORY_COLUMNS:
        return convert.llamafactory_row(row, spec.format, dict(spec.columns), dict(spec.tags) or None)
    if not spec.columns:
        return row
    out = dict(row)
    for ours, theirs in spec.columns.items():
        if theirs in row:
            out[ours] = row[theirs]
    return out


def _plain(value: Any) -> Any:
    """tool_calls may arrive as objects (TRL); our kind stores them as JSON text."""
    return value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _sft_row(row: dict, rid: str, source: str) -> dict | Drop:
    messages = row.get("messages")
    if not isinstance(messages, list):
        return Drop("missing_field", f"row {rid}: 'messages' is missing or not a list")
    out = []
    for m in messages:
        if not isinstance(m, dict):
            return Drop("missing_field", f"row {rid}: a turn is not an object")
        out.append({"role": m.get("role"), "content": m.get("content"), "tool_calls": _plain(m.get("tool_calls"))})
    return {"id": rid, "messages": out, "system": row.get("system"), "tools": _plain(row.get("tools")),
            "source": source}


def _sharegpt_system(row: dict) -> dict:
    """Many sharegpt files open with a {"from": "system"} turn; it is the system prompt."""
    turns = row.get("conversations")
    if isinstance(turns, list) and turns and isinstance(turns[0], dict) and turns[0].get("from") == "system":
        row = dict(row, conversations=turns[1:])
        row["system"] = row.get("system") or turns[0].get("value")
    return row


_CONVERTERS = {
    ("alpaca", "sft"): convert.alpaca_to_sft, ("alpaca", "preference"): convert.alpaca_to_preference,
    ("sharegpt", "sft"): convert.sharegpt_to_sft, ("sharegpt", "preference"): convert.sharegpt_to_preference,
    ("preference", "preference"): convert.trl_to_preference,
    ("hh_rlhf", "preference"): convert.hh_rlhf_to_preference,
    ("ranked", "ranked_preference"): convert.rows_to_ranked,
    ("oasst", "ranked_preference"): convert.rows_to_ranked,
}


def convert_row(row: Any, spec: DatasetSpec, index: int) -> dict | Drop:
    """One raw row as a record of our kind (a plain dict), or a Drop naming what is wrong."""
    if not isinstance(row, dict):
        return Drop("invalid_record", f"row {index} of {spec.name!r} is not an object")
    if INVALID_ROW_KEY in row:
        return Drop("invalid_record", f"row {index} of {spec.name!r}: {row[INVALID_ROW_KEY]}")
    row = _renamed(row, spec)
    rid = str(row["id"]) if row.get("id") is not None else f"{spec.name}-{index}"
    kind = spec.kind
    if kind == "text":
        text = row.get("text")
        if not isinstance(text, str):
            return Drop("missing_field", f"row {rid}: 'text' is missing or not a string")
        return {"id": rid, "text": text, "source": spec.name}
    media = convert.llamafactory_media(row, dict(spec.columns))
    if media:
        # The text holds <image>-style placeholders that mean nothing without the media.
        return Drop(DROP_MEDIA, f"row {rid}: has {', '.join(media)}; multimodal rows are not trained (text only)")
    if spec.format == "sft":
        record = _sft_row(row, rid, spec.name)
    else:
        if spec.format == "sharegpt":
            row = _sharegpt_system(row)
        try:
            record = _CONVERTERS[(spec.format, kind)]([row], source=spec.name).to_pylist()[0]
        except SchemaError as exc:
            return Drop(_reason(exc), f"row {rid}: {exc}")
        record["id"] = rid
    if isinstance(record, dict) and spec.system and not record.get("system"):
        record["system"] = spec.system
    return record


def read_as_ray(spec: DatasetSpec | str, registry=None, keep_drops: bool = False):
    """A Ray Dataset of the dataset's rows in our kinds (JSON-free columns of the kind),
    streamed; with `keep_drops`, bad rows come too, with `drop_reason` / `drop_detail`."""
    from train.ingest import records_dataset

    spec = load_dataset_spec(spec, registry) if not isinstance(spec, DatasetSpec) else spec
    ds = records_dataset([spec], weights=[1.0], seed=0)

    def expand(batch: dict) -> dict:
        rows = []
        for record, reason, detail in zip(batch["record"], batch["drop_reason"], batch["drop_detail"]):
            if reason is not None and not keep_drops:
                continue
            row = json.loads(record) if record else {}
            if keep_drops:
                row.update(drop_reason=reason, drop_detail=detail)
            rows.append(row)
        import pyarrow as pa

        return pa.Table.from_pylist(rows)

    return ds.map_batches(expand, batch_format="numpy", zero_copy_batch=False)
