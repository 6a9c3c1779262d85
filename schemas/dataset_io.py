"""Atomic dataset directories.

A dataset directory is complete only when it holds `_SUCCESS`. Jobs write into a
hidden temporary sibling and rename it into place at the end, so a failed job never
leaves a half-written directory that looks like a finished dataset.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.validate import validate

SUCCESS_MARKER = "_SUCCESS"


@contextlib.contextmanager
def atomic_output_dir(final_dir: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory that replaces `final_dir` only if the block succeeds."""
    final_dir = Path(final_dir).resolve()
    if final_dir.exists() and not overwrite:
        raise FileExistsError(f"output directory {final_dir} already exists")
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = final_dir.parent / f".{final_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        (tmp / SUCCESS_MARKER).write_text("", encoding="utf-8")
        if final_dir.exists():
            trash = final_dir.parent / f".{final_dir.name}.old-{uuid.uuid4().hex[:8]}"
            final_dir.rename(trash)
            tmp.rename(final_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_complete(directory: str | Path) -> bool:
    return (Path(directory) / SUCCESS_MARKER).exists()


def write_parquet(table: pa.Table, directory: str | Path, kind: str, file_name: str = "part-00000.parquet") -> Path:
    """Validate `table` as `kind` and write it as one Parquet file under `directory`."""
    table = validate(table, kind)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / file_name
    pq.write_table(table, path)
    return path


def read_parquet_dir(directory: str | Path, kind: str | None = None) -> pa.Table:
    """Read every Parquet file of a directory (sorted by name); validate when `kind` is given."""
    directory = Path(directory)
    files = sorted(directory.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet files in {directory}")
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    return validate(table, kind) if kind else table


def write_json(obj: object, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)
