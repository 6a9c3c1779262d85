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

Anything `datasets.load_dataset` reads is a dataset too (streamed, so it is never held
whole): `hf:NAME_OR_FOLDER?config=C&split=S&data_dir=D`, an entry {hf: ..., config, split}
(LLaMA-Factory's hf_hub_url / subset / folder), or a local folder whose README declares
`configs:` (the Hub layout). The split defaults to `train`.
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
HF_PREFIX = "hf:"
HF_DEFAULT_SPLIT = "train"
HF_OPTIONS = ("config", "data_dir", "split")
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
    loader: str = "files"  # files (our readers) | hf (datasets.load_dataset, streamed)
    config: str | None = None  # hf: the dataset's configuration (load_dataset's `name`)
    data_dir: str | None = None  # hf: load_dataset's `data_dir`

    @property
    def kind(self) -> str:
        if self.format == "text":
            return "text"
        if self.format in RANKED_FORMATS:
            return "ranked_preference"
        if self.format in ("preference", "hh_rlhf") or self.ranking:
            return "preference"
        return "sft"

    def open_hf(self):
        """The streamed `datasets` split of an hf dataset; errors name the dataset."""
        import datasets

        try:
            return datasets.load_dataset(self.path, name=self.config, split=self.split or HF_DEFAULT_SPLIT,
                                         data_dir=self.data_dir, streaming=True)
        except (ValueError, FileNotFoundError, OSError) as exc:
            detail = " ".join(str(exc).split())[:400]
            raise ValueError(f"dataset {self.name!r}: datasets.load_dataset({self.path!r}, config={self.config!r}, "
                             f"split={self.split or HF_DEFAULT_SPLIT!r}) failed: {detail}") from None

    def files(self) -> list[Path]:
        """The data files of this dataset, sorted (a split picks `<split>*` files or a `<split>/` folder).
        An hf dataset has none of ours: `datasets` resolves its files, and building its spec
        already opened its stream (so a missing folder, config or split has failed by then)."""
        if self.loader == "hf":
            return []
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


def parse_hf_reference(reference: str) -> dict[str, str]:
    """"hf:NAME_OR_FOLDER?config=C&split=S" -> {"hf": ..., "config": ..., "split": ...}."""
    from urllib.parse import parse_qsl

    source, _, query = reference[len(HF_PREFIX):].partition("?")
    if not source:
        raise ValueError(f"data {reference!r}: expected hf:NAME_OR_FOLDER[?config=...&split=...]")
    entry = {"hf": source}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key not in HF_OPTIONS:
            raise ValueError(f"data {reference!r}: unknown option {key!r}; valid: {', '.join(HF_OPTIONS)}")
        entry[key] = value
    return entry


def is_hf_folder(path: Path) -> bool:
    """A local folder laid out for `datasets.load_dataset`: a README whose YAML header declares configs."""
    readme = path / "README.md"
    if not (path.is_dir() and readme.is_file()):
        return False
    text = readme.read_text(encoding="utf-8", errors="replace")
    header = text.split("---", 2)[1] if text.startswith("---") and text.count("---") >= 2 else ""
    return "\nconfigs:" in "\n" + header or "\ndataset_info:" in "\n" + header


def _hf_spec(name: str | None, entry: Mapping[str, Any], base: Path) -> DatasetSpec:
    source = str(entry.get("hf") or entry.get("hf_hub_url"))
    local = Path(source).expanduser()
    if not local.is_absolute() and (base / local).exists():
        local = base / local  # a folder named relative to the registry file, as file_name is
    path = str(local) if local.exists() else source  # else a Hub name, resolved by datasets
    config = entry.get("config", entry.get("subset"))
    spec = DatasetSpec(name=name or Path(source).name, path=path, format="text", split=entry.get("split"),
                       loader="hf", config=config, data_dir=entry.get("data_dir", entry.get("folder")))
    first = next(iter(spec.open_hf()), None)  # opens the stream now: a bad config or split fails before Ray
    fmt = entry.get("format", entry.get("formatting"))
    ranking = False
    if fmt is None and "hf_hub_url" in entry:
        fmt = "alpaca"  # LLaMA-Factory's default formatting
    elif fmt is None:
        if first is None:
            raise ValueError(f"dataset {spec.name!r}: the split is empty; nothing to tell its format from")
        fmt, ranking = sniff_row_format(dict(first), spec.name)
    return _finish_spec(spec, fmt, entry, ranking)


def _finish_spec(spec: DatasetSpec, fmt: str, entry: Mapping[str, Any], ranking: bool) -> DatasetSpec:
    if fmt not in FORMATS:
        raise ValueError(f"dataset {spec.name!r}: unknown format {fmt!r}; known: {list(FORMATS)}")
    columns, tags = _check_columns(spec.name, fmt, entry.get("columns"), entry.get("tags"))
    system = entry.get("system")
    if system is not None and (not isinstance(system, str) or fmt == "text"):
        raise ValueError(f"dataset {spec.name!r}: system must be a default system prompt (a string) for a "
                         f"conversation format, got {system!r} for format {fmt}")
    return replace(spec, format=fmt, columns=columns, ranking=bool(entry.get("ranking", ranking)), tags=tags,
                   system=system or None)


def spec_from_entry(name: str, entry: Mapping[str, Any], base: Path = Path(".")) -> DatasetSpec:
    if entry.get("hf") or entry.get("hf_hub_url"):
        return _hf_spec(name, entry, base)
    path = entry.get("path", entry.get("file_name"))
    if isinstance(path, str) and path.startswith(HF_PREFIX):
        return _hf_spec(name, {**entry, **parse_hf_reference(path)}, base)
    if path and is_hf_folder(Path(path) if Path(path).is_absolute() else base / path):
        return _hf_spec(name, {**entry, "hf": str(path)}, base)
    if not path:
        raise ValueError(f"dataset {name!r}: registry entry needs 'path' (or 'file_name')")
    path = Path(path) if Path(path).is_absolute() else base / path
    fmt = entry.get("format", entry.get("formatting"))
    ranking = False
    if fmt is None and ("file_name" in entry or "columns" in entry or "ranking" in entry):
        fmt = "alpaca"  # LLaMA-Factory's default formatting for a dataset_info entry
    elif fmt is None:
        fmt, ranking = sniff_format(DatasetSpec(name, str(path), "text").files()[0])
    return _finish_spec(DatasetSpec(name=name, path=str(path), format="text", split=entry.get("split")),
                        fmt, entry, ranking)


def sniff_format(path: Path) -> tuple[str, bool]:
    """(format, ranking) guessed from the keys of the first row of a file."""
    if path.suffix == ".txt":
        return "text", False
    first = next(iter_file_rows(path), None)
    if first is None:
        raise ValueError(f"{path} has no rows to tell its format from")
    return sniff_row_format(first, str(path))


def sniff_row_format(first: dict, where: str) -> tuple[str, bool]:
    """(format, ranking) guessed from the keys of a dataset's first row."""
    path = where
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


SOURCE_KEYS = ("path", "file_name", "hf", "hf_hub_url")


def load_dataset_spec(name_or_path: str | Mapping | DatasetSpec, registry: str | Path | Mapping | None = None,
                      **overrides: Any) -> DatasetSpec:
    """A dataset by registry name, by path (format sniffed), by `hf:` reference, or from an
    inline entry dict. `overrides` are entry keys (split, config, columns, system, ...) laid
    over the registry entry before the spec is built, so an hf split is opened as asked."""
    if isinstance(name_or_path, DatasetSpec):
        return replace(name_or_path, **overrides) if overrides else name_or_path
    if isinstance(name_or_path, Mapping):
        entry = {**name_or_path, **overrides}
        hf = entry.get("hf") or entry.get("hf_hub_url")
        name = entry.get("name") or (None if hf else str(entry.get("path") or entry.get("file_name")))
        return spec_from_entry(name, entry)
    entries, base = _load_registry(registry)
    if name_or_path in entries:
        return spec_from_entry(name_or_path, {**entries[name_or_path], **overrides}, base)
    if name_or_path.startswith(HF_PREFIX):
        return spec_from_entry(overrides.pop("name", None), {**parse_hf_reference(name_or_path), **overrides})
    if any(overrides.get(k) for k in SOURCE_KEYS):
        # {name, hf|path, ...} given inline: the name names it, the entry says where it is.
        return spec_from_entry(name_or_path, overrides)
    if Path(name_or_path).exists():
        return spec_from_entry(Path(name_or_path).stem, {"path": name_or_path, **overrides})
    known = f"; registry has {sorted(entries)}" if entries else ""
    raise FileNotFoundError(f"dataset {name_or_path!r} is neither a registry name nor a path{known}")


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
    if spec.loader == "hf":
        rows = (dict(row) for row in spec.open_hf())
        yield from (_oasst_rows(rows) if spec.format == "oasst" else rows)
        return
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
