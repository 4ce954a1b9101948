"""The columns of the clean stage's outputs (DESIGN.md's artifact contract, FineWeb's schema)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

CLEAN_SCHEMA = pa.schema(
    [
        ("text", pa.string()),
        ("id", pa.string()),
        ("dump", pa.string()),
        ("url", pa.string()),
        ("date", pa.string()),
        ("file_path", pa.string()),
        ("language", pa.string()),
        ("language_score", pa.float64()),
        ("token_count", pa.int64()),  # filled by the tokenize stage
    ]
)
# internal: a unique, stable key per input record (file key + record index), used by dedup and resume
WORK_SCHEMA = CLEAN_SCHEMA.append(pa.field("_key", pa.string()))
REJECTED_SCHEMA = (
    CLEAN_SCHEMA.append(pa.field("step", pa.string()))
    .append(pa.field("reason", pa.string()))
    .append(pa.field("detail", pa.string()))
)
REJECTED_WORK_SCHEMA = REJECTED_SCHEMA.append(pa.field("_key", pa.string()))
ERRORS_SCHEMA = pa.schema(
    [
        ("file_path", pa.string()),
        ("record_index", pa.int64()),
        ("id", pa.string()),
        ("url", pa.string()),  # where the record says it came from, when it got that far
        ("step", pa.string()),
        ("reason", pa.string()),
        ("error", pa.string()),
    ]
)
UNDETERMINED_LANGUAGE = "und"  # partition value when language ID did not run


def _value(doc: dict[str, Any], name: str) -> Any:
    value = doc.get(name)
    if name == "language" and not value:
        return UNDETERMINED_LANGUAGE
    if value is None:
        return None
    if name in ("language_score",):
        return float(value)
    if name in ("token_count", "record_index"):
        return int(value)
    return value if isinstance(value, str) else str(value)


def to_table(docs: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Project documents onto a fixed schema (missing fields become nulls)."""
    columns = {name: [_value(d, name) for d in docs] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)
