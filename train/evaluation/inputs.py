"""Eval inputs: files or dataset directories, checked on the driver before Ray starts, read as
Ray datasets."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from train.formats import DatasetSpec, iter_file_rows

READABLE_SUFFIXES = (".jsonl", ".json", ".parquet", ".txt")


def data_files(paths: str | Iterable[str], what: str) -> list[Path]:
    """Every data file behind `paths` (files, or directories such as curate/synth outputs,
    whose data/ holds the rows); a missing path is an error naming it."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise ValueError(f"{what}: no input given (--data PATH)")
    files: list[Path] = []
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"{what}: {path} does not exist")
        found = [f for f in DatasetSpec(str(path), str(path), "text").files() if f.suffix in READABLE_SUFFIXES]
        if not found:
            raise FileNotFoundError(f"{what}: no {'/'.join(READABLE_SUFFIXES)} files under {path}")
        files += found
    return files


def first_row(files: list[Path]) -> dict[str, Any]:
    for path in files:
        for row in iter_file_rows(path):
            return row
    raise ValueError(f"no rows in {', '.join(map(str, files))}")


def require_columns(files: list[Path], columns: Iterable[str], what: str) -> dict[str, Any]:
    """The first row, after checking it has every column in `columns`."""
    row = first_row(files)
    missing = [c for c in columns if c not in row]
    if missing:
        raise ValueError(f"{what}: column {missing[0]!r} not in {files[0]} (columns: {', '.join(sorted(row))})")
    return row


def read_dataset(files: list[Path], columns: list[str] | None = None):
    """One Ray dataset over the files (grouped by type), restricted to `columns`."""
    import ray.data

    by_suffix: dict[str, list[str]] = {}
    for path in files:
        by_suffix.setdefault(path.suffix, []).append(str(path))
    parts = []
    for suffix, group in sorted(by_suffix.items()):
        if suffix == ".parquet":
            parts.append(ray.data.read_parquet(group, columns=columns))
            continue
        if suffix == ".txt":
            ds = ray.data.read_text(group)  # one row per line, column "text"
            ds = ds.filter(lambda row: bool(row["text"].strip()))
        else:
            ds = ray.data.read_json(group, lines=suffix == ".jsonl")
        parts.append(ds.select_columns(columns) if columns else ds)
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
