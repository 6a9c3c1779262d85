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


DATA_DIR, DROPPED_DIR = "data", "dropped"


class DatasetDir:
    """A dataset directory being written: data/ (kept rows, validated as `kind`), dropped/
    (each row with drop_stage and drop_reason), accounting.json (the funnel) and card/.

    Get one from `dataset_dir(...)`. Rows go in with `write_data` / `write_dropped`, or a Ray
    job writes into `data_dir` / `dropped_dir` itself; `finish(funnel, run)` must be called
    last: it checks that the funnel adds up and writes the accounting and the card.
    """

    def __init__(self, root: Path, kind: str):
        self.root, self.kind = root, kind
        self._parts = {DATA_DIR: 0, DROPPED_DIR: 0}
        self.finished = False

    @property
    def data_dir(self) -> Path:
        return self._dir(DATA_DIR)

    @property
    def dropped_dir(self) -> Path:
        return self._dir(DROPPED_DIR)

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path

    def _next_file(self, name: str) -> Path:
        path = self._dir(name) / f"part-{self._parts[name]:05d}.parquet"
        self._parts[name] += 1
        return path

    def write_data(self, table: pa.Table) -> None:
        """Kept rows: validated as the dataset's kind (a bad row fails naming row and field)."""
        pq.write_table(validate(table, self.kind), self._next_file(DATA_DIR))

    def write_dropped(self, table: pa.Table) -> None:
        """Dropped rows need not be records of the kind, but each names its stage and reason."""
        for name in ("drop_stage", "drop_reason"):
            if name not in table.column_names or table.column(name).null_count:
                row = 0 if name not in table.column_names else table.column(name).to_pylist().index(None)
                raise ValueError(f"dropped row {row}: field {name!r} is missing")
        pq.write_table(table, self._next_file(DROPPED_DIR))

    def finish(self, funnel: list, run: dict, card: bool = True, **card_options) -> None:
        from schemas.funnel import write_accounting

        self.data_dir, self.dropped_dir  # noqa: B018 - both exist even when empty
        write_accounting(self.root, funnel, run)
        if card:
            from schemas.card import write_card

            write_card(self.root, kind=self.kind, run=run, funnel=funnel, **card_options)
        self.finished = True


@contextlib.contextmanager
def dataset_dir(output: str | Path, kind: str) -> Iterator[DatasetDir]:
    """Write a dataset directory atomically: it appears at `output`, with `_SUCCESS`, only if
    the block finishes and called `finish`; a failed job leaves nothing that looks complete."""
    with atomic_output_dir(output) as tmp:
        out = DatasetDir(tmp, kind)
        yield out
        if not out.finished:
            raise RuntimeError(f"dataset {output}: written without its accounting (DatasetDir.finish not called)")
