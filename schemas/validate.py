"""Validation of Arrow tables against a record kind.

`validate(table, kind)` returns a table that carries exactly the kind's types, or
raises `SchemaError` naming the kind, the row and the field. Only lossless
representation changes are made (large_string -> string, large_list -> list, a
missing *nullable* struct child added as null); anything else is refused, never cast.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from schemas.records import MESSAGE_ROLES, MESSAGES_TYPE, RecordKind, get_kind


class SchemaError(ValueError):
    """A record does not match its kind's schema."""

    def __init__(self, kind: str, field: str, problem: str, row: int | None = None, record_id: str | None = None):
        self.kind, self.field, self.problem, self.row, self.record_id = kind, field, problem, row, record_id
        where = f"{kind} record"
        if row is not None:
            where += f" at row {row}"
        if record_id is not None:
            where += f" (id={record_id!r})"
        super().__init__(f"{where}: field {field!r}: {problem}")


class _TypeMismatch(Exception):
    pass


def _conform_array(arr: pa.Array, target: pa.DataType) -> pa.Array:
    """Return `arr` represented as `target` when that is lossless, else raise _TypeMismatch."""
    source = arr.type
    if source == target:
        return arr
    if pa.types.is_null(source):
        return pa.nulls(len(arr), target)
    if pa.types.is_string(target) and pa.types.is_large_string(source):
        return arr.cast(target)
    if pa.types.is_binary(target) and pa.types.is_large_binary(source):
        return arr.cast(target)
    if pa.types.is_list(target) and (pa.types.is_list(source) or pa.types.is_large_list(source)):
        values = _conform_array(arr.flatten(), target.value_type)
        offsets = pc.subtract(arr.offsets, arr.offsets[0]).cast(pa.int32())
        mask = arr.is_null() if arr.null_count else None
        return pa.ListArray.from_arrays(offsets, values, type=target, mask=mask)
    if pa.types.is_struct(target) and pa.types.is_struct(source):
        source_names = {source.field(i).name for i in range(source.num_fields)}
        extra = source_names - {target.field(i).name for i in range(target.num_fields)}
        if extra:
            raise _TypeMismatch(f"unexpected struct fields {sorted(extra)}")
        children = []
        for i in range(target.num_fields):
            child = target.field(i)
            if child.name in source_names:
                children.append(_conform_array(arr.field(child.name), child.type))
            elif child.nullable:
                children.append(pa.nulls(len(arr), child.type))
            else:
                raise _TypeMismatch(f"struct is missing required field {child.name!r}")
        mask = arr.is_null() if arr.null_count else None
        return pa.StructArray.from_arrays(children, fields=list(target), mask=mask)
    raise _TypeMismatch(f"has type {source}, expected {target}")


def _conform_column(col: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    return pa.chunked_array([_conform_array(chunk, target) for chunk in col.chunks], type=target)


def _first_true(mask: pa.ChunkedArray | pa.Array) -> int | None:
    idx = pc.index(mask, True).as_py()
    return None if idx < 0 else idx


class _Table:
    """Helper that turns a row index into an error with the record id."""

    def __init__(self, kind: RecordKind, table: pa.Table):
        self.kind, self.table = kind, table

    def error(self, field: str, problem: str, row: int | None = None) -> SchemaError:
        record_id = None
        if row is not None and "id" in self.table.column_names:
            value = self.table.column("id")[row].as_py()
            record_id = value if isinstance(value, str) else None
        return SchemaError(self.kind.name, field, problem, row, record_id)


def _check_messages(t: _Table, name: str, col: pa.ChunkedArray) -> None:
    """Roles must be known and every turn needs content; an empty list is refused."""
    lengths = pc.list_value_length(col)
    row = _first_true(pc.equal(lengths, 0))
    if row is not None:
        raise t.error(name, "has no turns", row)
    flat = pc.list_flatten(col)
    parents = pc.list_parent_indices(col)
    roles = pc.struct_field(flat, "role")
    contents = pc.struct_field(flat, "content")
    bad_role = pc.invert(pc.fill_null(pc.is_in(roles, pa.array(MESSAGE_ROLES)), False))
    pos = _first_true(bad_role)
    if pos is not None:
        role = roles[pos].as_py()
        raise t.error(f"{name}.role", f"unknown role {role!r} (allowed: {', '.join(MESSAGE_ROLES)})", parents[pos].as_py())
    pos = _first_true(pc.is_null(contents))
    if pos is not None:
        raise t.error(f"{name}.content", "is null", parents[pos].as_py())


def _check_ranked(t: _Table, columns: dict[str, pa.ChunkedArray]) -> None:
    """ranked_preference: at least two non-null responses; scores, when given, one per
    response and best first (the list order is the ranking, the scores must agree)."""
    responses = columns["responses"]
    lengths = pc.list_value_length(responses)
    row = _first_true(pc.less(lengths, 2))
    if row is not None:
        raise t.error("responses", f"needs at least 2 responses to rank, got {lengths[row].as_py()}", row)
    flat = pc.list_flatten(responses)
    pos = _first_true(pc.is_null(flat))
    if pos is not None:
        raise t.error("responses", "holds a null response", pc.list_parent_indices(responses)[pos].as_py())
    if "scores" not in columns:
        return
    for row, (n, scores) in enumerate(zip(lengths.to_pylist(), columns["scores"].to_pylist())):
        if scores is None:
            continue
        if len(scores) != n:
            raise t.error("scores", f"needs one score per response ({n}), got {len(scores)}", row)
        if any(later > earlier for earlier, later in zip(scores, scores[1:])):
            raise t.error("scores", f"must be non-increasing (responses are best first), got {scores}", row)


def validate(table: pa.Table, kind: str | RecordKind) -> pa.Table:
    """Check `table` against `kind`; return it with the kind's exact types and metadata."""
    if not isinstance(table, pa.Table):
        raise TypeError(f"validate() needs a pyarrow.Table, got {type(table).__name__}")
    kind = get_kind(kind) if isinstance(kind, str) else kind
    t = _Table(kind, table)
    columns: dict[str, pa.ChunkedArray] = {}
    fields: list[pa.Field] = []
    for f in kind.required:
        if f.name not in table.column_names:
            raise t.error(f.name, "is missing (required column)")
    for f in kind.required + kind.optional:
        if f.name not in table.column_names:
            continue
        try:
            col = _conform_column(table.column(f.name), f.type)
        except _TypeMismatch as exc:
            raise t.error(f.name, str(exc)) from None
        if not f.nullable:
            row = _first_true(pc.is_null(col))
            if row is not None:
                raise t.error(f.name, "is null (field is required)", row)
        if f.type == MESSAGES_TYPE:
            _check_messages(t, f.name, col)
        allowed = kind.enums.get(f.name)
        if allowed:
            row = _first_true(pc.invert(pc.fill_null(pc.is_in(col, pa.array(allowed)), True)))
            if row is not None:
                raise t.error(f.name, f"value {col[row].as_py()!r} not in {allowed}", row)
        columns[f.name] = col
        fields.append(f)
    if kind.name == "ranked_preference":
        _check_ranked(t, columns)
    known = {f.name for f in fields}
    extra = [name for name in table.column_names if name not in known]
    if extra and not kind.allow_extra_columns:
        raise t.error(extra[0], "is not part of this kind's schema")
    for name in extra:
        columns[name] = table.column(name)
        fields.append(table.schema.field(name))
    metadata = {b"raymill.kind": kind.name.encode(), b"raymill.version": str(kind.version).encode()}
    return pa.Table.from_arrays([columns[f.name] for f in fields], schema=pa.schema(fields, metadata=metadata))


def table_from_rows(rows: list[dict], kind: str | RecordKind) -> pa.Table:
    """Build a validated table of `kind` from Python dicts (missing optional fields become null)."""
    kind = get_kind(kind) if isinstance(kind, str) else kind
    names = {f.name for f in kind.required + kind.optional}
    for i, row in enumerate(rows):
        for f in kind.required:
            if f.name not in row:
                raise SchemaError(kind.name, f.name, "is missing", i, row.get("id") if isinstance(row.get("id"), str) else None)
    extra_names = sorted({k for row in rows for k in row} - names)
    present = [f for f in kind.required + kind.optional if any(f.name in r for r in rows) or f in kind.required]
    arrays = []
    for f in present:
        values = [r.get(f.name) for r in rows]
        try:
            arrays.append(pa.array(values, type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            row = _first_bad_value(values, f.type)
            raise SchemaError(kind.name, f.name, f"cannot be read as {f.type}: {exc}", row,
                              rows[row].get("id") if row is not None and isinstance(rows[row].get("id"), str) else None) from None
    table = pa.Table.from_arrays(arrays, schema=pa.schema(present))
    for name in extra_names:
        table = table.append_column(name, pa.array([r.get(name) for r in rows]))
    return validate(table, kind)


def _first_bad_value(values: list, type_: pa.DataType) -> int | None:
    for i, v in enumerate(values):
        try:
            pa.array([v], type=type_)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            return i
    return None
