"""The one stage interface of the curate pipeline.

A stage is a pure function over a `pyarrow.Table` batch: it adds label columns and
may mark rows as dropped by setting `drop_reason` (the name of the rule that fired)
and `drop_stage`. Rows already dropped by an earlier stage pass through untouched,
so each row carries the *first* reason it was dropped, and the runner can account
for every row: rows in = rows kept + rows dropped.
"""
from __future__ import annotations

from typing import Any, Mapping, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from schemas.options import from_mapping

T = TypeVar("T")

DROP_REASON = "drop_reason"
DROP_STAGE = "drop_stage"


def active_mask(table: pa.Table) -> pa.ChunkedArray | pa.Array:
    """True for rows no stage has dropped yet."""
    if DROP_REASON not in table.column_names:
        return pa.array([True] * table.num_rows, pa.bool_())
    return pc.is_null(table.column(DROP_REASON))


def mark_drops(table: pa.Table, drop: pa.Array | list[bool], reason: str | pa.Array | list, stage: str) -> pa.Table:
    """Set drop_reason/drop_stage where `drop` is true and the row is not dropped yet.

    `reason` is one rule name for all rows, or one per row (null where not dropping).
    """
    drop = pc.and_(pa.array(drop, pa.bool_()) if isinstance(drop, list) else drop, active_mask(table))
    n = table.num_rows
    reasons = pa.array([reason] * n, pa.string()) if isinstance(reason, str) else pa.array(reason, pa.string())
    old_reason = table.column(DROP_REASON) if DROP_REASON in table.column_names else pa.nulls(n, pa.string())
    old_stage = table.column(DROP_STAGE) if DROP_STAGE in table.column_names else pa.nulls(n, pa.string())
    new_reason = pc.if_else(drop, reasons, old_reason)
    new_stage = pc.if_else(drop, pa.array([stage] * n, pa.string()), old_stage)
    return set_column(set_column(table, DROP_REASON, new_reason), DROP_STAGE, new_stage)


def set_column(table: pa.Table, name: str, values) -> pa.Table:
    """Add or replace a column."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


class Stage:
    """Base class: subclasses set `name` and implement `process(active_rows) -> labeled rows`.

    `process` sees only rows not yet dropped and must return the same number of rows in
    the same order (labels added, some rows possibly marked with `mark_drops`).
    Stages that load a model set `needs_actor = True`; the runner then runs them in an
    actor pool so the model loads once per actor, in `__init__`.
    """

    name: str = "stage"
    needs_actor: bool = False

    def process(self, table: pa.Table) -> pa.Table:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, table: pa.Table) -> pa.Table:
        if table.num_rows == 0:
            return self.process(table)
        mask = active_mask(table)
        if pc.all(mask).as_py():
            out = self.process(table)
        else:
            active = table.filter(mask)
            done = table.filter(pc.invert(mask))
            processed = self.process(active) if active.num_rows else self.process(active)
            out = pa.concat_tables([processed, done], promote_options="permissive")
        if out.num_rows != table.num_rows:
            raise RuntimeError(f"stage {self.name!r} returned {out.num_rows} rows for {table.num_rows}: "
                               "stages must mark drops, never remove rows")
        return out


# ---------------------------------------------------------------- stage options
# A stage's YAML section is one options dataclass whose __post_init__ runs these checks, so
# parse_config (which builds the dataclass before Ray starts) turns a wrong value into one
# line naming the option instead of a surprise on a worker: YAML's "no" in quotes is a truthy
# string, and a string where a list is expected is iterated character by character.

def stage_options(cls: type[T], config: T | Mapping[str, Any] | None, options: Mapping[str, Any], section: str) -> T:
    """The stage's options from a built dataclass, a section mapping, or keyword arguments
    (`CleanLinesStage(min_words_per_line=3)` in tests and scripts): every way in is checked."""
    if isinstance(config, cls):
        if options:
            raise TypeError(f"{section}: pass either a {cls.__name__} or keyword options, not both")
        return config
    return from_mapping(cls, {**(config or {}), **options}, section)


def check_bool(option: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{option}: expected true or false, got {value!r}")


def check_int(option: str, value: Any, least: int = 0, *, nullable: bool = False) -> None:
    if nullable and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{option}: expected an integer >= {least}{' or null' if nullable else ''}, got {value!r}")


def check_strings(option: str, value: Any, *, non_empty: bool = False) -> None:
    """A list of strings (a bare string is refused: iterating it would yield its characters)."""
    items_ok = all(isinstance(v, str) and (v.strip() or not non_empty) for v in value) \
        if isinstance(value, (list, tuple)) else False
    if not items_ok:
        what = "non-empty strings" if non_empty else "strings"
        raise ValueError(f"{option}: expected a list of {what}, got {value!r}")


def check_name(option: str, value: Any) -> None:
    """A non-empty string, such as a column name."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{option}: expected a non-empty string, got {value!r}")
