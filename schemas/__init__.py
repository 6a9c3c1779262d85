"""raymill's on-disk contract: record schemas, validation, converters, atomic writes."""
from schemas.records import KINDS, MESSAGE_ROLES, MESSAGES_TYPE, RecordKind, get_kind
from schemas.validate import SchemaError, table_from_rows, validate
from schemas.dataset_io import atomic_output_dir, is_complete, read_parquet_dir, write_parquet

__all__ = [
    "KINDS", "MESSAGE_ROLES", "MESSAGES_TYPE", "RecordKind", "SchemaError", "atomic_output_dir",
    "get_kind", "is_complete", "read_parquet_dir", "table_from_rows", "validate", "write_parquet",
]
